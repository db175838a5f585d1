//! Apply semantics of the tables, checked without Raft.

use super::*;

fn set(key: &str, value: &str) -> KvOp {
    KvOp::Set {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
        cas: None,
        acquire: None,
        release: None,
    }
}

fn apply(s: &mut State, index: u64, cmd: Command) -> CommandResult {
    let mut ch = Changes::default();
    s.apply(index, &cmd, &mut ch)
}

fn session(id: &str, behavior: berth_api::types::SessionBehavior) -> Command {
    Command::Session(SessionOp::Create(Session {
        id: id.into(),
        name: String::new(),
        node: "n".into(),
        lock_delay_ns: 0,
        behavior,
        ttl: String::new(),
        node_checks: vec![],
        service_checks: None,
        create_index: 0,
        modify_index: 0,
    }))
}

#[test]
fn set_keeps_create_index_and_bumps_modify_index() {
    let mut s = State::default();
    apply(&mut s, 5, Command::Kv(set("a", "1")));
    apply(&mut s, 9, Command::Kv(set("a", "2")));
    let (idx, e) = s.kv_get("a");
    let e = e.unwrap();
    assert_eq!(
        (idx, e.create_index, e.modify_index, e.value.as_slice()),
        (9, 5, 9, &b"2"[..])
    );
}

#[test]
fn cas_zero_only_creates_and_cas_n_needs_the_modify_index() {
    let mut s = State::default();
    let cas = |key: &str, cas| {
        Command::Kv(KvOp::Set {
            key: key.into(),
            value: b"v".to_vec(),
            flags: 0,
            cas: Some(cas),
            acquire: None,
            release: None,
        })
    };
    assert_eq!(apply(&mut s, 1, cas("k", 0)), CommandResult::Bool(true));
    assert_eq!(apply(&mut s, 2, cas("k", 0)), CommandResult::Bool(false));
    assert_eq!(apply(&mut s, 3, cas("k", 7)), CommandResult::Bool(false));
    assert_eq!(apply(&mut s, 4, cas("k", 1)), CommandResult::Bool(true));
    assert_eq!(s.kv_get("k").0, 4);
}

#[test]
fn deletes_leave_tombstones_so_prefix_indexes_move_forward() {
    let mut s = State::default();
    apply(&mut s, 1, Command::Kv(set("p/a", "1")));
    apply(&mut s, 2, Command::Kv(set("p/b", "1")));
    apply(&mut s, 3, Command::Kv(set("q", "1")));
    assert_eq!(s.kv_list("p/").0, 2);
    apply(
        &mut s,
        4,
        Command::Kv(KvOp::Delete {
            key: "p/".into(),
            recurse: true,
            cas: None,
        }),
    );
    let (idx, entries) = s.kv_list("p/");
    assert_eq!((idx, entries.len()), (4, 0));
    assert_eq!(s.kv_get("q").0, 3, "other keys keep their index");
}

#[test]
fn keys_fold_at_the_separator() {
    let mut s = State::default();
    for (i, k) in ["a/b/c", "a/b/d", "a/e", "b"].iter().enumerate() {
        apply(&mut s, i as u64 + 1, Command::Kv(set(k, "")));
    }
    assert_eq!(s.kv_keys("a/", Some("/")).1, vec!["a/b/", "a/e"]);
    assert_eq!(s.kv_keys("", Some("/")).1, vec!["a/", "b"]);
    assert_eq!(s.kv_keys("a/", None).1.len(), 3);
}

#[test]
fn locks_acquire_release_and_die_with_their_session() {
    use berth_api::types::SessionBehavior::*;
    let mut s = State::default();
    apply(&mut s, 1, session("s1", Release));
    apply(&mut s, 2, session("s2", Delete));
    let lock = |key: &str, sid: &str, acquire: bool| {
        Command::Kv(KvOp::Set {
            key: key.into(),
            value: b"x".to_vec(),
            flags: 0,
            cas: None,
            acquire: acquire.then(|| sid.to_string()),
            release: (!acquire).then(|| sid.to_string()),
        })
    };
    assert_eq!(
        apply(&mut s, 3, lock("l", "s1", true)),
        CommandResult::Bool(true)
    );
    assert_eq!(
        apply(&mut s, 4, lock("l", "s2", true)),
        CommandResult::Bool(false)
    );
    assert_eq!(
        apply(&mut s, 5, lock("l", "s1", true)),
        CommandResult::Bool(true),
        "re-acquire by holder"
    );
    assert_eq!(s.kv_get("l").1.unwrap().lock_index, 1);
    assert_eq!(
        apply(&mut s, 6, lock("l", "s2", false)),
        CommandResult::Bool(false)
    );
    assert_eq!(
        apply(&mut s, 7, lock("l", "s1", false)),
        CommandResult::Bool(true)
    );
    assert_eq!(
        apply(&mut s, 8, lock("l", "s2", true)),
        CommandResult::Bool(true)
    );
    assert_eq!(s.kv_get("l").1.unwrap().lock_index, 2);
    assert!(matches!(
        apply(&mut s, 9, lock("m", "nope", true)),
        CommandResult::Rejected(_)
    ));

    apply(&mut s, 10, lock("r", "s1", true));
    apply(
        &mut s,
        11,
        Command::Session(SessionOp::Destroy { id: "s1".into() }),
    );
    assert_eq!(
        s.kv_get("r").1.unwrap().session,
        None,
        "release behaviour unlocks"
    );
    apply(
        &mut s,
        12,
        Command::Session(SessionOp::Destroy { id: "s2".into() }),
    );
    assert!(
        s.kv_get("l").1.is_none(),
        "delete behaviour removes held keys"
    );
    assert!(s.sessions.is_empty());
}

#[test]
fn watches_wake_only_what_changed() {
    use watch::{WatchTarget, Watches};
    let w = Watches::default();
    let mut a = w.subscribe(&WatchTarget::Key("a".into()));
    let mut b = w.subscribe(&WatchTarget::Key("b".into()));
    let mut p = w.subscribe(&WatchTarget::Prefix("a".into()));
    let deep = w.subscribe(&WatchTarget::Prefix("x/y/".into()));
    w.fire(&Changes {
        keys: vec!["a".into()],
        ..Default::default()
    });
    assert!(a.has_changed().unwrap());
    assert!(p.has_changed().unwrap());
    assert!(!b.has_changed().unwrap());
    assert!(!deep.has_changed().unwrap());
    w.fire(&Changes {
        trees: vec!["x/".into()],
        ..Default::default()
    });
    assert!(
        deep.has_changed().unwrap(),
        "a recursive delete above a prefix wakes it"
    );
    a.mark_unchanged();
    b.mark_unchanged();
    p.mark_unchanged();
}

#[test]
fn snapshot_round_trip_keeps_tables() {
    let mut s = State::default();
    apply(&mut s, 1, Command::Kv(set("a", "1")));
    apply(
        &mut s,
        2,
        session("s", berth_api::types::SessionBehavior::Release),
    );
    let bytes = serde_json::to_vec(&s).unwrap();
    let back: State = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back.kv, s.kv);
    assert_eq!(back.sessions, s.sessions);
    assert_eq!(back.table_index, s.table_index);
}

fn proxy_reg(node: &str, id: &str, dest: &str) -> Command {
    Command::Catalog(CatalogOp::Register(Box::new(Registration {
        node: berth_api::catalog::Node {
            node: node.into(),
            address: "10.0.0.1".into(),
            ..Default::default()
        },
        skip_node_update: false,
        service: Some(berth_api::catalog::AgentService {
            kind: "connect-proxy".into(),
            id: id.into(),
            service: format!("{id}-svc"),
            port: 21000,
            proxy: Some(serde_json::json!({"DestinationServiceName": dest})),
            ..Default::default()
        }),
        checks: vec![],
    })))
}

fn proxies(s: &State, dest: &str) -> Vec<String> {
    s.proxies_of(dest)
        .into_iter()
        .map(|(n, svc)| format!("{}/{}", n.node, svc.id))
        .collect()
}

#[test]
fn the_destination_index_follows_registrations() {
    let mut s = State::default();
    let mut ch = Changes::default();
    s.apply(1, &proxy_reg("a", "p1", "api"), &mut ch);
    assert!(
        ch.services.contains(&"api".to_string()),
        "a proxy's change touches its destination"
    );
    apply(&mut s, 2, proxy_reg("b", "p2", "api"));
    assert_eq!(proxies(&s, "api"), vec!["a/p1", "b/p2"]);
    // A new destination moves the proxy.
    apply(&mut s, 3, proxy_reg("a", "p1", "db"));
    assert_eq!(proxies(&s, "api"), vec!["b/p2"]);
    assert_eq!(proxies(&s, "db"), vec!["a/p1"]);
    // A snapshot restore rebuilds the same index.
    let mut restored: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    restored.rebuild_catalog_index();
    assert_eq!(proxies(&restored, "db"), vec!["a/p1"]);
    let mut ch = Changes::default();
    s.apply(
        4,
        &Command::Catalog(CatalogOp::Deregister {
            node: "b".into(),
            service_id: Some("p2".into()),
            check_id: None,
        }),
        &mut ch,
    );
    assert!(proxies(&s, "api").is_empty());
    assert!(
        ch.services.contains(&"api".to_string()),
        "a removed proxy touches its destination"
    );
    apply(
        &mut s,
        5,
        Command::Catalog(CatalogOp::Deregister {
            node: "a".into(),
            service_id: None,
            check_id: None,
        }),
    );
    assert!(proxies(&s, "db").is_empty());
}
