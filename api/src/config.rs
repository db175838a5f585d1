//! Config files (HCL or JSON) for every Berth binary. Both formats are read into one JSON value
//! and then deserialized with the path of the failing key kept, so an error can say which key
//! of which file is wrong.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: not valid {format}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error("config file {}: key `{key}`: {message}", path.display())]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Reads `path` as HCL (`.hcl`) or JSON (`.json`; any other name is sniffed by its first
/// character) into `T`. `T` should use `#[serde(deny_unknown_fields)]` so typos are caught.
pub fn load_file<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(path, &text)
}

/// Pure part of [`load_file`]: `path` only names the source and picks the format.
pub fn parse_str<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigFileError> {
    let is_json = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("hcl") => false,
        _ => text.trim_start().starts_with('{'),
    };
    let value: serde_json::Value = if is_json {
        serde_json::from_str(text).map_err(|e| ConfigFileError::Syntax {
            path: path.to_path_buf(),
            format: "JSON",
            message: e.to_string(),
        })?
    } else {
        hcl::from_str(text).map_err(|e| ConfigFileError::Syntax {
            path: path.to_path_buf(),
            format: "HCL",
            message: e.to_string().replace('\n', " "),
        })?
    };
    from_value(path, value)
}

/// Deserializes an already-parsed document, naming the failing key.
pub fn from_value<T: DeserializeOwned>(
    path: &Path,
    value: serde_json::Value,
) -> Result<T, ConfigFileError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        let (key, message) = describe(&key, &inner);
        ConfigFileError::Key {
            path: path.to_path_buf(),
            key,
            message,
        }
    })
}

/// serde says "unknown field `x`, expected one of ..."; the user wants "unknown key" and the
/// full path of the entry.
fn describe(path: &str, message: &str) -> (String, String) {
    if let Some((field, expected)) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        // serde_path_to_error's path already ends with the unknown field.
        let key = if path == "." || path.is_empty() {
            field.to_string()
        } else {
            path.to_string()
        };
        let expected = expected.trim_start_matches(", ");
        return (key, format!("unknown key ({expected})"));
    }
    let key = if path.is_empty() {
        ".".to_string()
    } else {
        path.to_string()
    };
    (key, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        verify: Option<bool>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        name: Option<String>,
        port: Option<u16>,
        list: Option<Vec<String>>,
        tls: Option<Inner>,
    }

    #[test]
    fn hcl_and_json_give_the_same_value() {
        let h: Cfg = parse_str(
            Path::new("a.hcl"),
            "name = \"x\"\nport = 1\nlist = [\"a\"]\ntls {\n verify = true\n}\n",
        )
        .unwrap();
        let j: Cfg = parse_str(
            Path::new("a.json"),
            r#"{"name":"x","port":1,"list":["a"],"tls":{"verify":true}}"#,
        )
        .unwrap();
        assert_eq!(h, j);
        assert_eq!(h.tls, Some(Inner { verify: Some(true) }));
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = parse_str::<Cfg>(Path::new("/etc/b.hcl"), "tls {\n bogus = 1\n}\n").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("config file /etc/b.hcl: key `tls.bogus`: unknown key"),
            "{s}"
        );
        let e = parse_str::<Cfg>(Path::new("c.json"), r#"{"nmae":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("key `nmae`: unknown key"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_expectation() {
        let e = parse_str::<Cfg>(Path::new("c.json"), r#"{"port":"high"}"#).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("key `port`") && s.contains("expected u16"),
            "{s}"
        );
    }

    #[test]
    fn syntax_errors_name_the_format() {
        let e = parse_str::<Cfg>(Path::new("c.json"), "{").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        let e = parse_str::<Cfg>(Path::new("c.hcl"), "name = = x").unwrap_err();
        assert!(e.to_string().contains("not valid HCL"), "{e}");
    }
}
