//! `berth intention ...`: create, read, list, check, match and delete intentions over the
//! server's `/v1/connect/intentions` API, as Consul's `consul intention` does.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use berth_api::connect::{Intention, IntentionPermission};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::Usage;
use crate::config::{FormatArgs, read_document};
use crate::http::{Api, ApiError, HttpArgs};
use crate::login::parse_meta;
use crate::output::{self, Format};

#[derive(Args, Debug)]
pub struct IntentionArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(subcommand)]
    pub command: IntentionCommand,
}

#[derive(Subcommand, Debug)]
pub enum IntentionCommand {
    /// Create an intention from SRC to DST (allow unless -deny).
    Create(CreateArgs),
    /// Delete the intention from SRC to DST.
    Delete(Pair),
    /// Show the intention from SRC to DST.
    Get(Pair),
    /// List all intentions, highest precedence first.
    List,
    /// Whether a connection from SRC to DST is allowed: prints Allowed or Denied.
    ///
    /// Exit status: 0 when allowed, 2 when denied, 1 on error (as Consul's `intention check`).
    /// L7 intentions are not evaluated: this is the L4 decision.
    Check(Pair),
    /// The intentions that apply to a service as destination (default) or as source, in the
    /// order they are evaluated (highest precedence first).
    Match(MatchArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct Pair {
    /// The source service (`*` for any).
    #[arg(value_name = "SRC")]
    pub source: String,
    /// The destination service (`*` for any).
    #[arg(value_name = "DST")]
    pub destination: String,
}

#[derive(Args, Debug, Clone, Default)]
pub struct CreateArgs {
    /// Allow the connections (the default).
    #[arg(long, conflicts_with = "deny")]
    pub allow: bool,
    /// Deny the connections.
    #[arg(long)]
    pub deny: bool,
    /// What the intention is for.
    #[arg(long)]
    pub description: Option<String>,
    /// Metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// Replace an existing intention for the pair instead of failing.
    #[arg(long)]
    pub replace: bool,
    /// The intention's body from an HCL or JSON file (`-` for standard input) instead of the
    /// flags: `Action` or L7 `Permissions`, `Description`, `Meta`.
    #[arg(long, value_name = "FILE|-", conflicts_with_all = ["allow", "deny", "description", "meta"])]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub pair: Pair,
}

#[derive(Args, Debug, Clone, Default)]
pub struct MatchArgs {
    /// Match NAME as the source.
    #[arg(long, conflicts_with = "destination")]
    pub source: bool,
    /// Match NAME as the destination (the default).
    #[arg(long)]
    pub destination: bool,
    /// The service to match.
    #[arg(value_name = "NAME")]
    pub name: String,
}

pub async fn run(args: IntentionArgs) -> anyhow::Result<()> {
    let format = args.format.format;
    match args.command {
        IntentionCommand::Create(a) => {
            check_pair(&a.pair)?;
            // A file that cannot be read or parsed is refused before anything is sent.
            let file = match &a.file {
                Some(f) => Some(read_document(
                    &f.display().to_string(),
                    &mut std::io::stdin(),
                )?),
                None => None,
            };
            let body = create_body(&a, file)?;
            create(&Api::new(&args.http)?, &a, &body).await
        }
        IntentionCommand::Delete(p) => {
            check_pair(&p)?;
            let api = Api::new(&args.http)?;
            api.request(Method::DELETE, EXACT, &exact_query(&p), None)
                .await
                .with_context(|| format!("cannot delete intention {}", arrow(&p)))?;
            output::emit(&format!("Intention deleted: {}", arrow(&p)));
            Ok(())
        }
        IntentionCommand::Get(p) => {
            check_pair(&p)?;
            let api = Api::new(&args.http)?;
            let v = api
                .get(EXACT, &exact_query(&p))
                .await
                .with_context(|| format!("cannot read intention {}", arrow(&p)))?;
            let text = match format {
                Format::Json => output::json(&v)?,
                Format::Pretty => pretty(&decode_one(&v)?),
            };
            output::emit(&text);
            Ok(())
        }
        IntentionCommand::List => {
            let api = Api::new(&args.http)?;
            let v = api
                .get(&["connect", "intentions"], &[])
                .await
                .context("cannot list intentions")?;
            let text = match format {
                Format::Json => output::json(&v)?,
                Format::Pretty => table(&decode_list(&v)?),
            };
            output::emit(&text);
            Ok(())
        }
        IntentionCommand::Check(p) => {
            check_pair(&p)?;
            let api = Api::new(&args.http)?;
            let v = api
                .get(&["connect", "intentions", "check"], &exact_query(&p))
                .await
                .with_context(|| format!("cannot check intention {}", arrow(&p)))?;
            let allowed = v
                .get("Allowed")
                .and_then(Value::as_bool)
                .context("unexpected answer from the server: no Allowed")?;
            if allowed {
                output::emit("Allowed");
                return Ok(());
            }
            output::emit("Denied");
            // Consul's exit status for a denied check; not an error, so no `Error:` line.
            let _ = std::io::stdout().flush();
            std::process::exit(DENIED_EXIT);
        }
        IntentionCommand::Match(m) => {
            if m.name.trim().is_empty() {
                return Err(Usage("NAME is empty".into()).into());
            }
            let by = if m.source { "source" } else { "destination" };
            let api = Api::new(&args.http)?;
            let v = api
                .get(
                    &["connect", "intentions", "match"],
                    &[("by", by), ("name", &m.name)],
                )
                .await
                .with_context(|| format!("cannot match intentions by {by} {}", m.name))?;
            let list = v.get(&m.name).cloned().unwrap_or(Value::Null);
            let mut ixns = decode_list(&list)?;
            // The server's order already; kept stable among equals.
            ixns.sort_by_key(|i| std::cmp::Reverse(i.precedence));
            let text = match format {
                Format::Json => output::json(&list)?,
                Format::Pretty => ixns.iter().map(summary).collect::<Vec<_>>().join("\n"),
            };
            output::emit(&text);
            Ok(())
        }
    }
}

/// The exit status of `intention check` when the connection would be denied.
pub const DENIED_EXIT: i32 = 2;

const EXACT: &[&str] = &["connect", "intentions", "exact"];

fn exact_query(p: &Pair) -> [(&'static str, &str); 2] {
    [("source", &p.source), ("destination", &p.destination)]
}

/// Both names given: an empty one would not reach the server at all.
pub fn check_pair(p: &Pair) -> Result<(), Usage> {
    for (what, v) in [("SRC", &p.source), ("DST", &p.destination)] {
        if v.trim().is_empty() {
            return Err(Usage(format!("{what} is empty")));
        }
    }
    Ok(())
}

fn arrow(p: &Pair) -> String {
    format!("{} => {}", p.source, p.destination)
}

/// The body of `PUT /v1/connect/intentions/exact`: from the flags, or the `-file` document
/// (already parsed, keys in the API's spelling).
pub fn create_body(a: &CreateArgs, file: Option<Value>) -> anyhow::Result<Value> {
    let Some(doc) = file else {
        let mut m = Map::new();
        m.insert(
            "Action".into(),
            json!(if a.deny { "deny" } else { "allow" }),
        );
        if let Some(d) = &a.description {
            m.insert("Description".into(), json!(d));
        }
        if !a.meta.is_empty() {
            let meta: Map<String, Value> =
                a.meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            m.insert("Meta".into(), Value::Object(meta));
        }
        return Ok(Value::Object(m));
    };
    let name = a
        .file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_default();
    let Value::Object(mut m) = doc else {
        bail!("{name} must hold an object");
    };
    for (key, given) in [
        ("SourceName", &a.pair.source),
        ("DestinationName", &a.pair.destination),
    ] {
        match m.remove(key) {
            None => {}
            Some(Value::String(s)) if s == *given => {}
            Some(other) => bail!("{name} has {key} {other} but the command names {given:?}"),
        }
    }
    let has_action = m
        .get("Action")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let has_permissions = m
        .get("Permissions")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    if !has_action && !has_permissions {
        bail!("{name} has neither an Action nor Permissions");
    }
    Ok(Value::Object(m))
}

async fn create(api: &Api, a: &CreateArgs, body: &Value) -> anyhow::Result<()> {
    let p = &a.pair;
    let what = || format!("cannot create intention {}", arrow(p));
    if !a.replace {
        match api.get(EXACT, &exact_query(p)).await {
            Ok(_) => bail!(
                "Intention with source {:?} and destination {:?} already exists (use -replace)",
                p.source,
                p.destination
            ),
            Err(ApiError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(anyhow::Error::new(e).context(what())),
        }
    }
    let ok = api
        .request(Method::PUT, EXACT, &exact_query(p), Some(body))
        .await
        .with_context(what)?;
    if ok == Value::Bool(false) {
        bail!("intention {} was not written", arrow(p));
    }
    output::emit(&format!("Created: {} ({})", arrow(p), detail_of_body(body)));
    Ok(())
}

/// `allow`, `deny`, or how many L7 permissions.
fn detail(action: &str, permissions: usize) -> String {
    if permissions > 0 {
        let s = if permissions == 1 { "" } else { "s" };
        format!("{permissions} L7 permission{s}")
    } else {
        action.to_string()
    }
}

fn detail_of_body(body: &Value) -> String {
    let n = body
        .get("Permissions")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    detail(body.get("Action").and_then(Value::as_str).unwrap_or(""), n)
}

fn decode_one(v: &Value) -> anyhow::Result<Intention> {
    serde_json::from_value(v.clone()).context("unexpected answer from the server")
}

fn decode_list(v: &Value) -> anyhow::Result<Vec<Intention>> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    serde_json::from_value(v.clone()).context("unexpected answer from the server")
}

/// `web => api (allow)`: one line of `intention match`.
pub fn summary(i: &Intention) -> String {
    format!(
        "{} => {} ({})",
        i.source_name,
        i.destination_name,
        detail(&i.action, i.permissions.len())
    )
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    const W: usize = 14;
    let label = format!("{key}:");
    let _ = writeln!(out, "{label:<W$}{value}");
}

/// One permission on one line: its action and what it matches.
fn permission(p: &IntentionPermission) -> String {
    match &p.http {
        Some(h) => {
            let http = serde_json::to_string(h).unwrap_or_default();
            format!("{} HTTP {http}", p.action)
        }
        None => p.action.clone(),
    }
}

/// `intention get`, as Consul prints it: "Key:   value" lines.
pub fn pretty(i: &Intention) -> String {
    let mut s = String::new();
    line(&mut s, "Source", &i.source_name);
    line(&mut s, "Destination", &i.destination_name);
    if !i.id.is_empty() {
        line(&mut s, "ID", &i.id);
    }
    if i.permissions.is_empty() {
        line(&mut s, "Action", &i.action);
    } else {
        line(&mut s, "Action", "(L7 permissions)");
    }
    if !i.description.is_empty() {
        line(&mut s, "Description", &i.description);
    }
    line(&mut s, "Precedence", i.precedence);
    if !i.source_type.is_empty() {
        line(&mut s, "Source Type", &i.source_type);
    }
    for (k, v) in &i.meta {
        line(&mut s, &format!("Meta[{k}]"), v);
    }
    line(&mut s, "Create Index", i.create_index);
    line(&mut s, "Modify Index", i.modify_index);
    if !i.permissions.is_empty() {
        let _ = writeln!(s, "Permissions:");
        for p in &i.permissions {
            let _ = writeln!(s, "   {}", permission(p));
        }
    }
    s
}

/// `intention list`: a table of Source, Destination, Action and Precedence (nothing for no
/// intentions).
pub fn table(list: &[Intention]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 4]> =
        std::iter::once(["Source", "Destination", "Action", "Precedence"].map(String::from))
            .chain(list.iter().map(|i| {
                [
                    i.source_name.clone(),
                    i.destination_name.clone(),
                    detail(&i.action, i.permissions.len()),
                    i.precedence.to_string(),
                ]
            }))
            .collect();
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(n, (c, w))| {
                if n == 3 {
                    c.clone()
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(s, "{}", cells.join("  ").trim_end());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(s: &str, d: &str) -> Pair {
        Pair {
            source: s.into(),
            destination: d.into(),
        }
    }

    fn ixn(s: &str, d: &str, action: &str, precedence: u32) -> Intention {
        Intention {
            source_name: s.into(),
            destination_name: d.into(),
            action: action.into(),
            precedence,
            ..Default::default()
        }
    }

    #[test]
    fn empty_names_are_usage_errors() {
        assert!(check_pair(&pair("web", "api")).is_ok());
        assert!(check_pair(&pair("*", "*")).is_ok());
        assert_eq!(check_pair(&pair("", "api")).unwrap_err().0, "SRC is empty");
        assert_eq!(check_pair(&pair("web", " ")).unwrap_err().0, "DST is empty");
    }

    #[test]
    fn bodies_from_flags_allow_by_default() {
        let mut a = CreateArgs {
            pair: pair("web", "api"),
            ..Default::default()
        };
        assert_eq!(create_body(&a, None).unwrap(), json!({"Action": "allow"}));
        a.deny = true;
        a.description = Some("no".into());
        a.meta = vec![("team".into(), "x".into())];
        assert_eq!(
            create_body(&a, None).unwrap(),
            json!({"Action": "deny", "Description": "no", "Meta": {"team": "x"}})
        );
    }

    #[test]
    fn bodies_from_files_must_say_what_to_do_and_agree_on_the_pair() {
        let a = CreateArgs {
            pair: pair("web", "api"),
            file: Some("i.hcl".into()),
            ..Default::default()
        };
        let doc = crate::config::parse_document(
            "i.hcl",
            "source_name = \"web\"\npermissions = [{ action = \"allow\", http { path_exact = \"/x\" } }]\n",
        )
        .unwrap();
        assert_eq!(
            create_body(&a, Some(doc)).unwrap(),
            json!({"Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/x"}}]})
        );
        let e = create_body(&a, Some(json!({"Description": "d"}))).unwrap_err();
        assert_eq!(e.to_string(), "i.hcl has neither an Action nor Permissions");
        let e =
            create_body(&a, Some(json!({"Action": "deny", "DestinationName": "db"}))).unwrap_err();
        assert!(e.to_string().contains("DestinationName \"db\""), "{e}");
    }

    #[test]
    fn flags_that_clash_are_refused() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct T {
            #[command(subcommand)]
            c: IntentionCommand,
        }
        let parse = |args: &[&str]| {
            T::try_parse_from(berth_api::cli::normalize_args(
                args.iter().map(std::ffi::OsString::from),
            ))
        };
        let usage = |args: &[&str]| parse(args).expect_err("refused").exit_code();
        assert_eq!(usage(&["t", "create", "-allow", "-deny", "a", "b"]), 2);
        assert_eq!(usage(&["t", "create", "-file", "f", "-deny", "a", "b"]), 2);
        assert_eq!(usage(&["t", "create", "a"]), 2);
        assert_eq!(usage(&["t", "match", "-source", "-destination", "a"]), 2);
        let T {
            c: IntentionCommand::Create(c),
        } = parse(&["t", "create", "-deny", "-replace", "web", "api"]).unwrap()
        else {
            panic!("not create")
        };
        assert!(c.deny && c.replace && !c.allow);
        assert_eq!(
            (c.pair.source.as_str(), c.pair.destination.as_str()),
            ("web", "api")
        );
    }

    #[test]
    fn summaries_and_tables() {
        let list = vec![
            ixn("web", "api", "allow", 9),
            ixn("*", "api", "deny", 8),
            Intention {
                permissions: vec![IntentionPermission::default(); 2],
                ..ixn("billing", "*", "", 6)
            },
        ];
        assert_eq!(summary(&list[0]), "web => api (allow)");
        assert_eq!(summary(&list[2]), "billing => * (2 L7 permissions)");
        assert_eq!(
            table(&list),
            "Source   Destination  Action            Precedence\n\
             web      api          allow             9\n\
             *        api          deny              8\n\
             billing  *            2 L7 permissions  6\n"
        );
        assert_eq!(table(&[]), "");
    }

    #[test]
    fn get_prints_key_value_lines() {
        let mut i = ixn("web", "api", "allow", 9);
        i.description = "web to api".into();
        i.meta.insert("team".into(), "x".into());
        let text = pretty(&i);
        assert!(
            text.starts_with(
                "Source:       web\nDestination:  api\nAction:       allow\n\
                 Description:  web to api\nPrecedence:   9\n"
            ),
            "{text}"
        );
        assert!(text.contains("Meta[team]:   x\n"), "{text}");
        assert!(!text.contains("Permissions"), "{text}");
    }
}
