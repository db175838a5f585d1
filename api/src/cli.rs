//! Consul users type `-retry-join`; GNU tools and clap expect `--retry-join`. Both are accepted
//! by rewriting single-dash long flags before clap sees them.

use std::ffi::OsString;

/// Rewrites `-name` and `-name=value` (a single dash followed by two or more flag characters)
/// into `--name` / `--name=value`. Short flags (`-h`), values that are numbers (`-1`), a lone `-`
/// and everything after `--` are left alone.
pub fn normalize_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || passthrough {
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        if is_single_dash_long(s) {
            out.push(OsString::from(format!("-{s}")));
        } else {
            out.push(arg);
        }
    }
    out
}

fn is_single_dash_long(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('-') else {
        return false;
    };
    if rest.starts_with('-') {
        return false;
    }
    let name = rest.split('=').next().unwrap_or("");
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: &[&str]) -> Vec<String> {
        normalize_args(v.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            norm(&["prog", "-dev", "-retry-join", "a:1", "-node=x"]),
            ["prog", "--dev", "--retry-join", "a:1", "--node=x"]
        );
    }

    #[test]
    fn short_flags_numbers_and_passthrough_are_kept() {
        assert_eq!(
            norm(&["prog", "-h", "-1", "-", "--x", "--", "-keep"]),
            ["prog", "-h", "-1", "-", "--x", "--", "-keep"]
        );
    }
}
