//! `berth config ...`: write, read, list and delete config entries (`service-defaults`,
//! `proxy-defaults`, `service-intentions`) over the server's `/v1/config` API, as Consul's
//! `consul config` does.
//!
//! A config entry file is HCL or JSON. Keys may be spelt as in the API (`Kind`, `PathPrefix`)
//! or in snake_case (`kind`, `path_prefix`), as Consul accepts; they are sent in PascalCase.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value};

use crate::http::{Api, HttpArgs};
use crate::output::{self, Format};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// `-format` alone (the ACL commands' `-meta` would clash with `intention create -meta`).
#[derive(Args, Debug, Clone, Default)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, global = true, help_heading = "Output Options", value_enum, default_value_t = Format::Pretty)]
    pub format: Format,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Create or replace a config entry from an HCL or JSON file (`-` for standard input).
    Write(WriteArgs),
    /// Print a config entry as JSON.
    Read(EntryRef),
    /// List the names of the config entries of a kind (`-format json`: the entries).
    List(ListArgs),
    /// Delete a config entry.
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
pub struct WriteArgs {
    /// Write only if the entry's ModifyIndex is -modify-index (or, without it, the file's
    /// ModifyIndex; 0 writes only an entry that does not exist yet).
    #[arg(long)]
    pub cas: bool,
    /// The ModifyIndex -cas compares with.
    #[arg(long = "modify-index", value_name = "INDEX", requires = "cas")]
    pub modify_index: Option<u64>,
    /// The config entry: an HCL or JSON file, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: String,
}

#[derive(Args, Debug)]
pub struct EntryRef {
    /// The entry's kind: service-defaults, proxy-defaults or service-intentions.
    #[arg(long)]
    pub kind: String,
    /// The entry's name.
    #[arg(long)]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The kind of entries to list.
    #[arg(long)]
    pub kind: String,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub entry: EntryRef,
    /// Delete only if the entry's ModifyIndex is -modify-index.
    #[arg(long, requires = "modify_index")]
    pub cas: bool,
    /// The ModifyIndex -cas compares with.
    #[arg(long = "modify-index", value_name = "INDEX", requires = "cas")]
    pub modify_index: Option<u64>,
}

pub async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::Write(w) => {
            // A file that cannot be read or parsed is refused before anything is sent.
            let doc = read_document(&w.file, &mut std::io::stdin())?;
            let api = Api::new(&args.http)?;
            write(&api, &w, doc).await
        }
        ConfigCommand::Read(r) => {
            let api = Api::new(&args.http)?;
            let e = api
                .get(&["config", &r.kind, &r.name], &[])
                .await
                .with_context(|| format!("cannot read config entry {}/{}", r.kind, r.name))?;
            // JSON in both formats, as Consul's `config read`.
            output::emit(&output::json(&e)?);
            Ok(())
        }
        ConfigCommand::List(l) => {
            let api = Api::new(&args.http)?;
            let list = api
                .get(&["config", &l.kind], &[])
                .await
                .with_context(|| format!("cannot list config entries of kind {}", l.kind))?;
            let text = match args.format.format {
                Format::Json => output::json(&list)?,
                Format::Pretty => names(&list)?.join("\n"),
            };
            output::emit(&text);
            Ok(())
        }
        ConfigCommand::Delete(d) => delete(&Api::new(&args.http)?, &d).await,
    }
}

async fn write(api: &Api, w: &WriteArgs, doc: Value) -> anyhow::Result<()> {
    let (kind, name) = entry_id(&doc, &w.file)?;
    let cas = w.cas.then(|| {
        w.modify_index
            .unwrap_or_else(|| doc.get("ModifyIndex").and_then(Value::as_u64).unwrap_or(0))
    });
    let cas_text = cas.map(|c| c.to_string()).unwrap_or_default();
    let written = api
        .request(
            Method::PUT,
            &["config"],
            &[("cas", cas_text.as_str())],
            Some(&doc),
        )
        .await
        .with_context(|| format!("cannot write config entry {kind}/{name}"))?;
    if written != Value::Bool(true) {
        match cas {
            Some(c) => bail!("config entry was not written: its ModifyIndex is not {c}"),
            None => bail!("config entry {kind}/{name} was not written"),
        }
    }
    output::emit(&format!("Config entry written: {kind}/{name}"));
    Ok(())
}

async fn delete(api: &Api, d: &DeleteArgs) -> anyhow::Result<()> {
    let EntryRef { kind, name } = &d.entry;
    let cas = d.modify_index.filter(|_| d.cas);
    let cas_text = cas.map(|c| c.to_string()).unwrap_or_default();
    let deleted = api
        .request(
            Method::DELETE,
            &["config", kind, name],
            &[("cas", cas_text.as_str())],
            None,
        )
        .await
        .with_context(|| format!("cannot delete config entry {kind}/{name}"))?;
    if deleted == Value::Bool(false) {
        match cas {
            Some(c) => bail!("config entry was not deleted: its ModifyIndex is not {c}"),
            None => bail!("config entry {kind}/{name} was not deleted"),
        }
    }
    output::emit(&format!("Config entry deleted: {kind}/{name}"));
    Ok(())
}

/// The `Name` of each entry of a list answer.
fn names(list: &Value) -> anyhow::Result<Vec<String>> {
    let items = match list {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => bail!("unexpected answer from the server: not a list"),
    };
    Ok(items
        .iter()
        .filter_map(|e| e.get("Name").and_then(Value::as_str))
        .map(String::from)
        .collect())
}

/// The Kind and Name of a config entry document; `source` names the file in errors.
pub fn entry_id(doc: &Value, source: &str) -> anyhow::Result<(String, String)> {
    let source = shown(source);
    let Some(obj) = doc.as_object() else {
        bail!("{source} is not a config entry: expected an object");
    };
    let field = |k: &str| -> anyhow::Result<String> {
        match obj.get(k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | None => bail!("{source} is not a config entry: no {k}"),
            Some(_) => bail!("{source} is not a config entry: {k} is not a string"),
        }
    };
    Ok((field("Kind")?, field("Name")?))
}

/// How a file argument is named in messages: `-` is standard input.
fn shown(source: &str) -> String {
    if source == "-" {
        "standard input".to_string()
    } else {
        source.to_string()
    }
}

/// Reads `source` (a path, or `-` for `stdin`) and parses it with [`parse_document`].
pub fn read_document(source: &str, stdin: &mut dyn Read) -> anyhow::Result<Value> {
    let text = if source == "-" {
        let mut s = String::new();
        stdin
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        s
    } else {
        std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))?
    };
    parse_document(source, &text)
}

/// HCL or JSON text into JSON with the API's key spelling ([`api_keys`]). `source` names the
/// text in errors and picks the format: `.json` is JSON, `.hcl` HCL, anything else (and `-`)
/// JSON when it starts with `{`, else HCL.
pub fn parse_document(source: &str, text: &str) -> anyhow::Result<Value> {
    let is_json = match Path::new(source).extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => true,
        Some(e) if e.eq_ignore_ascii_case("hcl") => false,
        _ => text.trim_start().starts_with('{'),
    };
    let name = shown(source);
    let v: Value = if is_json {
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{name} is not valid JSON: {e}"))?
    } else {
        hcl_value(text).map_err(|e| {
            let msg = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            anyhow::anyhow!("{name} is not valid HCL: {msg}")
        })?
    };
    if !v.is_object() {
        bail!("{name} must hold an object");
    }
    Ok(api_keys(v))
}

/// HCL 2 text into JSON; Consul's HCL 1 spelling of a block inside an object or list
/// (`HTTP { ... }`, as Consul's docs write L7 permissions) is accepted too, as `HTTP = {`.
fn hcl_value(text: &str) -> Result<Value, hcl::Error> {
    hcl::from_str(text).or_else(|first| {
        let fixed = nested_blocks_as_objects(text);
        if fixed == text {
            return Err(first);
        }
        // Errors are reported against what the user wrote.
        hcl::from_str(&fixed).map_err(|_| first)
    })
}

/// Inserts `=` between a key and the `{` that follows it inside an object or a list (HCL 1
/// lets a block stand there; HCL 2 wants an attribute). Strings, comments and heredocs are
/// left alone, and so is everything at the top level and in block bodies.
pub fn nested_blocks_as_objects(text: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Ctx {
        Body,
        Expr,
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Start,
        Key,
        Assign,
        Other,
    }
    let b = text.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut out = String::with_capacity(text.len() + 16);
    let mut copied = 0;
    let mut stack = vec![Ctx::Body];
    let mut prev = Tok::Start;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                prev = Tok::Key;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if at(i + 1) == b'/' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if at(i + 1) == b'*' => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && at(i + 1) == b'/') {
                    i += 1;
                }
                i += 2;
                continue;
            }
            b'<' if at(i + 1) == b'<' => {
                let mut j = i + 2;
                if at(j) == b'-' {
                    j += 1;
                }
                let start = j;
                while at(j).is_ascii_alphanumeric() || at(j) == b'_' {
                    j += 1;
                }
                let marker = &text[start..j];
                i = j;
                if !marker.is_empty() {
                    // The heredoc ends with the line that holds its marker alone.
                    let mut end = text.len();
                    let mut pos = text[j..].find('\n').map_or(text.len(), |n| j + n + 1);
                    while pos < text.len() {
                        let line_end = text[pos..].find('\n').map_or(text.len(), |n| pos + n);
                        if text[pos..line_end].trim() == marker {
                            end = line_end;
                            break;
                        }
                        pos = line_end + 1;
                    }
                    i = end;
                }
                prev = Tok::Other;
                continue;
            }
            b'{' => {
                let top = stack.last().copied().unwrap_or(Ctx::Body);
                if top == Ctx::Expr && prev == Tok::Key {
                    out.push_str(&text[copied..i]);
                    out.push_str("= ");
                    copied = i;
                }
                stack.push(if top == Ctx::Body && prev == Tok::Key {
                    Ctx::Body
                } else {
                    Ctx::Expr
                });
                prev = Tok::Other;
            }
            b'[' | b'(' => {
                stack.push(Ctx::Expr);
                prev = Tok::Other;
            }
            b'}' | b']' | b')' => {
                if stack.len() > 1 {
                    stack.pop();
                }
                prev = Tok::Other;
            }
            b'=' if at(i + 1) == b'>' || at(i + 1) == b'=' => {
                i += 2;
                prev = Tok::Other;
                continue;
            }
            b'=' | b':' => prev = Tok::Assign,
            c if c.is_ascii_whitespace() => {}
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while at(i).is_ascii_alphanumeric() || at(i) == b'_' || at(i) == b'-' {
                    i += 1;
                }
                prev = Tok::Key;
                continue;
            }
            c if c.is_ascii_digit() => {
                while at(i).is_ascii_alphanumeric() || at(i) == b'.' {
                    i += 1;
                }
                prev = Tok::Other;
                continue;
            }
            _ => prev = Tok::Other,
        }
        i += 1;
    }
    out.push_str(&text[copied.min(text.len())..]);
    out
}

/// Keys whose values are the user's own data: their keys are sent as written.
const OPAQUE: &[&str] = &["Config", "Meta", "LegacyMeta"];
/// Keys that hold lists: one HCL block (`sources { ... }`) becomes a list of one.
const LISTS: &[&str] = &["Sources", "Permissions", "Header", "Methods"];
/// Keys that hold one object: a list of one (repeated HCL blocks) becomes that object.
const OBJECTS: &[&str] = &["HTTP", "Config", "Meta", "LegacyMeta"];
/// Words spelt in capitals in the API's keys.
const ACRONYMS: &[&str] = &["HTTP", "ID", "TLS", "SNI"];

/// `path_exact` -> `PathExact`, `http` -> `HTTP`, `legacy_id` -> `LegacyID`; keys already in
/// PascalCase are kept (`PathExact`), camelCase gets its first letter raised (`pathExact`).
pub fn pascal_case(key: &str) -> String {
    key.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            if let Some(a) = ACRONYMS.iter().find(|a| a.eq_ignore_ascii_case(w)) {
                return a.to_string();
            }
            let mut c = w.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Every key of `v` in the API's PascalCase ([`pascal_case`]), but inside the user's own data
/// ([`OPAQUE`]); lists and objects as HCL blocks give them made into what the API expects.
pub fn api_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = pascal_case(&k);
                    let key = if key.is_empty() { k } else { key };
                    let v = shaped(&key, v);
                    let v = if OPAQUE.contains(&key.as_str()) {
                        v
                    } else {
                        api_keys(v)
                    };
                    (key, v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(api_keys).collect()),
        other => other,
    }
}

fn shaped(key: &str, v: Value) -> Value {
    match v {
        Value::Object(_) if LISTS.contains(&key) => Value::Array(vec![v]),
        Value::Array(mut items)
            if OBJECTS.contains(&key) && items.len() == 1 && items[0].is_object() =>
        {
            items.remove(0)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_become_pascal_case() {
        assert_eq!(pascal_case("kind"), "Kind");
        assert_eq!(pascal_case("path_prefix"), "PathPrefix");
        assert_eq!(pascal_case("PathRegex"), "PathRegex");
        assert_eq!(pascal_case("pathExact"), "PathExact");
        assert_eq!(pascal_case("http"), "HTTP");
        assert_eq!(pascal_case("Http"), "HTTP");
        assert_eq!(pascal_case("HTTP"), "HTTP");
        assert_eq!(pascal_case("legacy_id"), "LegacyID");
        assert_eq!(pascal_case("modify_index"), "ModifyIndex");
    }

    #[test]
    fn snake_case_hcl_becomes_the_apis_json() {
        let hcl = r#"
kind = "service-intentions"
name = "api"
meta = { owner_team = "payments" }
sources = [
  {
    name = "web"
    description = "web reads"
    permissions = [
      {
        action = "allow"
        http {
          path_prefix = "/v1"
          methods     = ["GET", "HEAD"]
          header = [{ name = "x-env", exact = "prod" }]
        }
      }
    ]
  },
  {
    name   = "*"
    action = "deny"
  }
]
"#;
        let v = parse_document("intentions.hcl", hcl).unwrap();
        assert_eq!(
            v,
            json!({
                "Kind": "service-intentions",
                "Name": "api",
                "Meta": {"owner_team": "payments"},
                "Sources": [
                    {
                        "Name": "web",
                        "Description": "web reads",
                        "Permissions": [{
                            "Action": "allow",
                            "HTTP": {
                                "PathPrefix": "/v1",
                                "Methods": ["GET", "HEAD"],
                                "Header": [{"Name": "x-env", "Exact": "prod"}],
                            },
                        }],
                    },
                    {"Name": "*", "Action": "deny"},
                ],
            })
        );
        assert_eq!(
            entry_id(&v, "intentions.hcl").unwrap(),
            ("service-intentions".into(), "api".into())
        );
    }

    #[test]
    fn consuls_documented_l7_intentions_parse() {
        // As in Consul's docs: HCL 1's `HTTP { ... }` inside a list's object.
        let hcl = r#"
Kind = "service-intentions"
Name = "api"
Sources = [
  {
    Name = "admin-dashboard"
    Permissions = [
      {
        Action = "allow"
        HTTP {
          PathPrefix = "/v2"
          Methods    = ["GET", "PUT", "POST", "DELETE", "HEAD"]
        }
      },
      {
        Action = "deny"
        HTTP {
          PathExact = "/v2/admin" # comment with HTTP { in it
        }
      }
    ]
  }
]
"#;
        let v = parse_document("l7.hcl", hcl).unwrap();
        assert_eq!(
            v["Sources"][0]["Permissions"],
            json!([
                {"Action": "allow", "HTTP": {"PathPrefix": "/v2", "Methods": ["GET", "PUT", "POST", "DELETE", "HEAD"]}},
                {"Action": "deny", "HTTP": {"PathExact": "/v2/admin"}},
            ])
        );
    }

    #[test]
    fn nested_blocks_get_an_equals_sign_only_inside_objects_and_lists() {
        let f = nested_blocks_as_objects;
        assert_eq!(f("a = [{ http { x = 1 } }]"), "a = [{ http = { x = 1 } }]");
        assert_eq!(f("a = { \"HTTP\" {} }"), "a = { \"HTTP\" = {} }");
        // Blocks in bodies, strings, comments and heredocs are left alone.
        let kept = "sources {\n  http { x = \"a { b\" }\n}\n# x = [{ y {\nz = <<EOT\n[{ k { }]\nEOT\nc = [1] // [{ q {\n";
        assert_eq!(f(kept), kept);
        assert_eq!(
            f("m = { for k, v in x : k => { a = v } }"),
            "m = { for k, v in x : k => { a = v } }"
        );
    }

    #[test]
    fn hcl_blocks_become_lists_where_the_api_has_lists() {
        let one = parse_document(
            "x.hcl",
            "Kind = \"k\"\nName = \"n\"\nsources {\n  name = \"web\"\n  action = \"allow\"\n}\n",
        )
        .unwrap();
        assert_eq!(one["Sources"], json!([{"Name": "web", "Action": "allow"}]));
        let two = parse_document(
            "x.hcl",
            "Kind = \"k\"\nName = \"n\"\nsources {\n  name = \"a\"\n}\nsources {\n  name = \"b\"\n}\n",
        )
        .unwrap();
        assert_eq!(two["Sources"], json!([{"Name": "a"}, {"Name": "b"}]));
    }

    #[test]
    fn proxy_config_keys_are_the_users_own() {
        let v = parse_document(
            "p.hcl",
            "kind = \"proxy-defaults\"\nname = \"global\"\nconfig {\n  protocol = \"http\"\n  local_connect_timeout_ms = 100\n}\n",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({
                "Kind": "proxy-defaults",
                "Name": "global",
                "Config": {"protocol": "http", "local_connect_timeout_ms": 100},
            })
        );
    }

    #[test]
    fn json_is_read_by_extension_or_by_its_first_character() {
        let j = r#"{"kind": "service-defaults", "Name": "api", "protocol": "http"}"#;
        let want = json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"});
        assert_eq!(parse_document("a.json", j).unwrap(), want);
        assert_eq!(parse_document("-", j).unwrap(), want);
        assert_eq!(parse_document("entry", &format!("\n  {j}")).unwrap(), want);
        let h = "Kind = \"service-defaults\"\nName = \"api\"\nProtocol = \"http\"\n";
        assert_eq!(parse_document("-", h).unwrap(), want);
    }

    #[test]
    fn documents_that_do_not_parse_name_their_source_on_one_line() {
        let e = parse_document("bad.hcl", "Kind = \n = \"x\"\n{").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("bad.hcl is not valid HCL: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let e = parse_document("bad.json", "{\"Kind\": ").unwrap_err();
        assert!(
            e.to_string().starts_with("bad.json is not valid JSON: "),
            "{e}"
        );
        let e = parse_document("-", "[1, 2]").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("standard input is not valid HCL: "),
            "{e}"
        );
        let e = parse_document("list.json", "[1, 2]").unwrap_err();
        assert_eq!(e.to_string(), "list.json must hold an object");
    }

    #[test]
    fn an_entry_needs_a_kind_and_a_name() {
        let e = entry_id(&json!({"Name": "api"}), "f.hcl").unwrap_err();
        assert_eq!(e.to_string(), "f.hcl is not a config entry: no Kind");
        let e = entry_id(&json!({"Kind": "service-defaults", "Name": 3}), "-").unwrap_err();
        assert_eq!(
            e.to_string(),
            "standard input is not a config entry: Name is not a string"
        );
    }

    #[test]
    fn list_answers_become_names() {
        assert_eq!(
            names(&json!([{"Kind": "k", "Name": "a"}, {"Kind": "k", "Name": "b"}])).unwrap(),
            ["a", "b"]
        );
        assert!(names(&Value::Null).unwrap().is_empty());
        assert!(names(&json!({})).is_err());
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.hcl");
        let e = read_document(&p.display().to_string(), &mut &b""[..]).unwrap_err();
        assert!(e.to_string().contains("nope.hcl"), "{e}");
        let mut stdin: &[u8] = b"Kind = \"service-defaults\"\nName = \"x\"\n";
        assert_eq!(
            read_document("-", &mut stdin).unwrap(),
            json!({"Kind": "service-defaults", "Name": "x"})
        );
    }
}
