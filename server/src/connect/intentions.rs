//! Intentions: validation of `service-intentions` entries, Consul's precedence, and the
//! decision for a (source, destination) pair. Pure.

use berth_api::connect::{ConfigEntry, HttpPermission, Intention, SourceIntention};

use crate::state::connect::ConnectTables;

pub const KIND: &str = "service-intentions";

/// Consul's precedence in the default namespace: exact beats wildcard, and the destination
/// counts more than the source.
pub fn precedence(source: &str, destination: &str) -> u32 {
    match (source == "*", destination == "*") {
        (false, false) => 9,
        (true, false) => 8,
        (false, true) => 6,
        (true, true) => 5,
    }
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

fn check_http(h: &HttpPermission) -> Result<(), String> {
    let paths = [&h.path_exact, &h.path_prefix, &h.path_regex]
        .iter()
        .filter(|p| !p.is_empty())
        .count();
    if paths > 1 {
        return Err("at most one of PathExact, PathPrefix, or PathRegex may be configured".into());
    }
    for (name, p) in [("PathExact", &h.path_exact), ("PathPrefix", &h.path_prefix)] {
        if !p.is_empty() && !p.starts_with('/') {
            return Err(format!("{name} doesn't start with '/': {p:?}"));
        }
    }
    if !h.path_regex.is_empty() {
        regex::Regex::new(&h.path_regex).map_err(|e| format!("PathRegex: {e}"))?;
    }
    for m in &h.methods {
        if !METHODS.contains(&m.as_str()) {
            return Err(format!("Methods contains an invalid method {m:?}"));
        }
    }
    for hd in &h.header {
        if hd.name.is_empty() {
            return Err("Header has no Name".into());
        }
        let set = [
            hd.present,
            !hd.exact.is_empty(),
            !hd.prefix.is_empty(),
            !hd.suffix.is_empty(),
            !hd.regex.is_empty(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if set > 1 {
            return Err(format!(
                "Header {:?} may have only one of Present, Exact, Prefix, Suffix or Regex",
                hd.name
            ));
        }
        if !hd.regex.is_empty() {
            regex::Regex::new(&hd.regex).map_err(|e| format!("Header {:?}: {e}", hd.name))?;
        }
    }
    if paths == 0 && h.methods.is_empty() && h.header.is_empty() {
        return Err("HTTP permission has no path, methods or headers to match".into());
    }
    Ok(())
}

/// Checks and normalizes a `service-intentions` entry: every source named once, with either
/// an L4 `Action` or L7 `Permissions` (which need an HTTP-family protocol on the destination).
pub fn normalize(mut e: ConfigEntry, protocol: &str) -> Result<ConfigEntry, String> {
    if e.name.is_empty() {
        return Err("Name is required".into());
    }
    let sources = e.sources.take().unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for mut s in sources {
        if s.name.is_empty() {
            return Err("Sources[].Name is required".into());
        }
        if !seen.insert(s.name.clone()) {
            return Err(format!(
                "Sources[].Name {:?} is listed more than once",
                s.name
            ));
        }
        s.action = s.action.to_ascii_lowercase();
        match (s.action.as_str(), s.permissions.is_empty()) {
            ("allow" | "deny", true) => {}
            ("", false) => {
                if !["http", "http2", "grpc"].contains(&protocol) {
                    return Err(format!(
                        "Sources[{}].Permissions requires the destination {:?} to have protocol http, http2 or grpc (it has {protocol:?})",
                        s.name, e.name
                    ));
                }
                for p in &mut s.permissions {
                    p.action = p.action.to_ascii_lowercase();
                    if !["allow", "deny"].contains(&p.action.as_str()) {
                        return Err(format!(
                            "Sources[{}].Permissions[].Action must be allow or deny",
                            s.name
                        ));
                    }
                    let http = p.http.as_ref().ok_or_else(|| {
                        format!("Sources[{}].Permissions[].HTTP is required", s.name)
                    })?;
                    check_http(http)
                        .map_err(|m| format!("Sources[{}].Permissions: {m}", s.name))?;
                }
            }
            ("", true) => {
                return Err(format!(
                    "Sources[{}] needs an Action (allow or deny) or Permissions",
                    s.name
                ));
            }
            (a, true) => {
                return Err(format!(
                    "Sources[{}].Action must be allow or deny, not {a:?}",
                    s.name
                ));
            }
            (_, false) => {
                return Err(format!(
                    "Sources[{}] may have an Action or Permissions, not both",
                    s.name
                ));
            }
        }
        s.precedence = precedence(&s.name, &e.name);
        if s.kind.is_empty() {
            s.kind = "consul".into();
        }
        out.push(s);
    }
    out.sort_by(|a, b| b.precedence.cmp(&a.precedence).then(a.name.cmp(&b.name)));
    e.sources = Some(out);
    e.protocol.clear();
    e.config = None;
    Ok(e)
}

/// Every intention that can apply to `destination` (its own entry's and the wildcard
/// destination's), highest precedence first.
pub fn for_destination(t: &ConnectTables, destination: &str) -> Vec<(String, SourceIntention)> {
    let mut v: Vec<(String, SourceIntention)> = Vec::new();
    for d in [destination, "*"] {
        if let Some(e) = t.entry(KIND, d) {
            for s in e.sources.iter().flatten() {
                v.push((d.to_string(), s.clone()));
            }
        }
        if destination == "*" {
            break;
        }
    }
    v.sort_by(|a, b| {
        b.1.precedence
            .cmp(&a.1.precedence)
            .then(a.1.name.cmp(&b.1.name))
    });
    v
}

/// The intention that decides `source` → `destination`, if any.
pub fn matching(
    t: &ConnectTables,
    source: &str,
    destination: &str,
) -> Option<(String, SourceIntention)> {
    for_destination(t, destination)
        .into_iter()
        .find(|(_, s)| s.name == source || s.name == "*")
}

/// `/v1/connect/intentions/check`: an L4 decision. An intention with L7 permissions does not
/// allow a connection that cannot be inspected at L7.
pub fn allowed(t: &ConnectTables, source: &str, destination: &str, default_allow: bool) -> bool {
    match matching(t, source, destination) {
        Some((_, s)) => s.action == "allow",
        None => default_allow,
    }
}

/// The legacy view of one source of an entry.
pub fn legacy(destination: &str, s: &SourceIntention, entry: &ConfigEntry) -> Intention {
    Intention {
        id: s.legacy_id.clone(),
        description: s.description.clone(),
        source_ns: "default".into(),
        source_name: s.name.clone(),
        destination_ns: "default".into(),
        destination_name: destination.to_string(),
        source_type: if s.kind.is_empty() {
            "consul".into()
        } else {
            s.kind.clone()
        },
        action: s.action.clone(),
        permissions: s.permissions.clone(),
        precedence: s.precedence,
        meta: s.legacy_meta.clone(),
        create_index: entry.create_index,
        modify_index: entry.modify_index,
    }
}

/// Puts (or replaces) one source in a destination's entry, as the legacy exact API does.
pub fn upsert_source(
    entry: Option<&ConfigEntry>,
    destination: &str,
    s: SourceIntention,
) -> ConfigEntry {
    let mut e = entry.cloned().unwrap_or_else(|| ConfigEntry {
        kind: KIND.into(),
        name: destination.to_string(),
        ..Default::default()
    });
    let mut sources = e.sources.take().unwrap_or_default();
    sources.retain(|x| x.name != s.name);
    sources.push(s);
    e.sources = Some(sources);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::connect::entry_key;
    use berth_api::connect::IntentionPermission;

    fn src(name: &str, action: &str) -> SourceIntention {
        SourceIntention {
            name: name.into(),
            action: action.into(),
            ..Default::default()
        }
    }

    fn entry(dest: &str, sources: Vec<SourceIntention>) -> ConfigEntry {
        ConfigEntry {
            kind: KIND.into(),
            name: dest.into(),
            sources: Some(sources),
            ..Default::default()
        }
    }

    fn tables(entries: Vec<ConfigEntry>) -> ConnectTables {
        let mut t = ConnectTables::default();
        for e in entries {
            let e = normalize(e, "http").unwrap();
            t.entries.insert(entry_key(&e.kind, &e.name), e);
        }
        t
    }

    #[test]
    fn precedence_decides() {
        let t = tables(vec![
            entry("api", vec![src("web", "deny"), src("*", "allow")]),
            entry("*", vec![src("web", "allow"), src("*", "deny")]),
        ]);
        assert!(
            !allowed(&t, "web", "api", true),
            "exact beats the wildcard source"
        );
        assert!(
            allowed(&t, "billing", "api", false),
            "wildcard source on api"
        );
        assert!(allowed(&t, "web", "db", false), "web → * allow");
        assert!(!allowed(&t, "billing", "db", true), "* → * deny");
        let order: Vec<u32> = for_destination(&t, "api")
            .iter()
            .map(|(_, s)| s.precedence)
            .collect();
        assert_eq!(order, vec![9, 8, 6, 5]);
        let empty = ConnectTables::default();
        assert!(allowed(&empty, "a", "b", true));
        assert!(!allowed(&empty, "a", "b", false));
    }

    #[test]
    fn entries_are_validated() {
        let l7 = SourceIntention {
            name: "web".into(),
            permissions: vec![IntentionPermission {
                action: "allow".into(),
                http: Some(HttpPermission {
                    path_exact: "/orders".into(),
                    methods: vec!["POST".into()],
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        assert!(normalize(entry("api", vec![l7.clone()]), "http").is_ok());
        let e = normalize(entry("api", vec![l7.clone()]), "tcp").unwrap_err();
        assert!(e.contains("requires the destination"), "{e}");
        let mut bad = l7.clone();
        bad.permissions[0].http.as_mut().unwrap().path_prefix = "/x".into();
        assert!(
            normalize(entry("api", vec![bad]), "http")
                .unwrap_err()
                .contains("at most one")
        );
        let mut bad = l7.clone();
        bad.permissions[0].http.as_mut().unwrap().methods = vec!["FETCH".into()];
        assert!(
            normalize(entry("api", vec![bad]), "http")
                .unwrap_err()
                .contains("invalid method")
        );
        let mut both = l7;
        both.action = "allow".into();
        assert!(
            normalize(entry("api", vec![both]), "http")
                .unwrap_err()
                .contains("not both")
        );
        for (s, why) in [
            (vec![src("web", "maybe")], "must be allow or deny"),
            (vec![src("web", "")], "needs an Action"),
            (
                vec![src("web", "allow"), src("web", "deny")],
                "more than once",
            ),
            (vec![src("", "allow")], "Name is required"),
        ] {
            let e = normalize(entry("api", s), "tcp").unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
