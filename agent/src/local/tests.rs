use super::*;
use berth_api::catalog::{Node, canonical_keys};
use serde_json::json;

fn state() -> LocalState {
    LocalState::new(&AgentConfig::new(Node {
        node: "n1".into(),
        ..Default::default()
    }))
}

fn svc(v: Value) -> ServiceRegistration {
    serde_json::from_value(canonical_keys(v)).unwrap()
}

#[test]
fn service_checks_get_consul_ids_names_and_initial_status() {
    let st = state();
    let one = st
        .build_service(svc(json!({"name": "web", "check": {"ttl": "10s"}})))
        .unwrap();
    assert_eq!(one.service.id, "web");
    assert_eq!(one.checks[0].0.check_id, "service:web");
    assert_eq!(one.checks[0].0.name, "Service 'web' check");
    assert_eq!(one.checks[0].0.status, CRITICAL);
    assert_eq!(one.checks[0].0.kind, "ttl");
    let many = st
        .build_service(svc(json!({"name": "web", "id": "w1",
            "checks": [{"http": "http://127.0.0.1:1/", "interval": "100ms"}, {"tcp": "127.0.0.1:1", "interval": "5s"}]})))
        .unwrap();
    let ids: Vec<&str> = many
        .checks
        .iter()
        .map(|(c, _)| c.check_id.as_str())
        .collect();
    assert_eq!(ids, ["service:w1:1", "service:w1:2"]);
    assert_eq!(
        many.checks[0].1.interval, MIN_INTERVAL,
        "intervals below 1s are raised"
    );
    assert_eq!(many.checks[0].0.timeout, "10s");
}

#[test]
fn sidecar_service_gets_consul_defaults_and_goes_with_its_parent() {
    let mut st = state();
    let new = st
        .build_service(svc(json!({"name": "web", "port": 8080, "tags": ["a"],
            "connect": {"sidecar_service": {}}})))
        .unwrap();
    let side = new.sidecar.as_ref().unwrap();
    assert_eq!(side.service.id, "web-sidecar-proxy");
    assert_eq!(side.service.kind, "connect-proxy");
    assert_eq!(side.service.port, 21000);
    assert_eq!(side.service.tags, ["a"]);
    let proxy = side.service.proxy.as_ref().unwrap();
    assert_eq!(proxy["DestinationServiceName"], "web");
    assert_eq!(proxy["LocalServicePort"], 8080);
    assert_eq!(side.checks[0].0.name, "Connect Sidecar Listening");
    st.add_service(new, None, false);
    assert_eq!(st.services.len(), 2);
    let second = st
        .build_service(svc(
            json!({"name": "api", "port": 9090, "connect": {"sidecar_service": {}}}),
        ))
        .unwrap();
    assert_eq!(
        second.sidecar.as_ref().unwrap().service.port,
        21001,
        "the next free port"
    );
    assert!(st.remove_service("web"));
    assert!(st.services.is_empty(), "the sidecar went with its parent");
    assert!(st.checks.is_empty());
}

#[test]
fn bad_registrations_name_the_problem() {
    let st = state();
    for (v, needle) in [
        (json!({"port": 1}), "Missing service name"),
        (
            json!({"name": "w", "check": {"interval": "1s"}}),
            "exactly one of TTL",
        ),
        (
            json!({"name": "w", "check": {"ttl": "1s", "tcp": "a:1"}}),
            "only one of",
        ),
        (
            json!({"name": "w", "check": {"http": "http://x/"}}),
            "Interval is required",
        ),
        (
            json!({"name": "w", "check": {"http": "ftp://x/", "interval": "1s"}}),
            "http or https",
        ),
        (
            json!({"name": "w", "check": {"tcp": "nohost", "interval": "1s"}}),
            "host:port",
        ),
        (
            json!({"name": "w", "check": {"args": ["/bin/true"], "interval": "1s"}}),
            "Script checks are not supported",
        ),
        (
            json!({"name": "w", "check": {"ttl": "1s", "status": "sleepy"}}),
            "Invalid check status",
        ),
        (
            json!({"name": "p", "kind": "connect-proxy", "port": 1}),
            "DestinationServiceName",
        ),
        (
            json!({"name": "w", "weights": {"passing": 0, "warning": 1}}),
            "Passing must be greater than 0",
        ),
    ] {
        let e = st
            .build_service(svc(v.clone()))
            .err()
            .unwrap_or_else(|| panic!("{v} was accepted"));
        assert!(e.to_string().contains(needle), "{v}: {e}");
    }
    let orphan: CheckRegistration = serde_json::from_value(canonical_keys(
        json!({"name": "c", "ttl": "1s", "service_id": "ghost"}),
    ))
    .unwrap();
    assert!(
        st.build_check(orphan, None, "")
            .unwrap_err()
            .to_string()
            .contains("does not exist")
    );
}

#[test]
fn thresholds_hold_back_status_changes() {
    let mut st = state();
    let def: CheckRegistration = serde_json::from_value(canonical_keys(json!({
        "name": "c", "tcp": "127.0.0.1:1", "interval": "1s",
        "success_before_passing": 2, "failures_before_critical": 3
    })))
    .unwrap();
    let (check, spec) = st.build_check(def, None, "").unwrap();
    let id = st.add_check(check, spec);
    let rid = st.checks[&id].runner_id;
    assert!(
        !st.report(&id, rid, PASSING, "ok".into()),
        "one success is not enough"
    );
    assert!(st.report(&id, rid, PASSING, "ok".into()));
    assert_eq!(st.checks[&id].check.status, PASSING);
    assert!(!st.report(&id, rid, CRITICAL, "down".into()));
    assert!(!st.report(&id, rid, CRITICAL, "down".into()));
    assert!(
        st.report(&id, rid, CRITICAL, "down".into()),
        "the third failure counts"
    );
    assert_eq!(st.checks[&id].check.status, CRITICAL);
    assert!(!st.report(&id, rid + 1, PASSING, "stale runner".into()));
}

#[test]
fn ttl_updates_and_expiry() {
    let mut st = state();
    let def: CheckRegistration =
        serde_json::from_value(canonical_keys(json!({"name": "t", "ttl": "1s"}))).unwrap();
    let (check, spec) = st.build_check(def, None, "").unwrap();
    let id = st.add_check(check, spec);
    assert!(st.update_ttl(&id, PASSING, "fine".into()).unwrap());
    assert!(!st.expire_ttl(&id, Instant::now()), "not yet expired");
    assert!(st.expire_ttl(&id, Instant::now() + Duration::from_secs(2)));
    assert_eq!(st.checks[&id].check.status, CRITICAL);
    assert!(matches!(
        st.update_ttl("nope", PASSING, String::new()),
        Err(RegisterError::NotFound(_))
    ));
}

#[test]
fn maintenance_adds_and_removes_a_critical_check() {
    let mut st = state();
    let new = st.build_service(svc(json!({"name": "web"}))).unwrap();
    st.add_service(new, None, false);
    st.service_maintenance("web", true, "deploy").unwrap();
    let c = &st.checks["_service_maintenance:web"];
    assert_eq!(
        (c.check.status.as_str(), c.check.notes.as_str()),
        (CRITICAL, "deploy")
    );
    st.service_maintenance("web", false, "").unwrap();
    assert!(st.checks.is_empty());
    assert!(matches!(
        st.service_maintenance("ghost", true, ""),
        Err(RegisterError::NotFound(_))
    ));
    st.node_maintenance(true, "");
    assert!(
        st.checks[NODE_MAINTENANCE]
            .check
            .notes
            .contains("no reason was provided")
    );
}
