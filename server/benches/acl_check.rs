//! What an ACL check costs a request: resolving the token (through the server's cache,
//! invalidated by the ACL table's index) and asking its authorizer, on a real in-process
//! server with ACLs on and 10,000 tokens in the store. Prints the figures and their ratio to
//! the 10 µs target; it asserts nothing about time.
//!
//! `cargo bench -p berth-server --bench acl_check` (also `scripts/bench --suite acl`).

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;

use berth_acl::{Access, Resource};
use berth_api::acl::{Link, Policy, ServiceIdentity, Token};
use berth_server::config::{Cli, FileConfig, resolve};
use berth_server::state::Command;
use berth_server::state::acl::AclOp;

const TARGET_NS: f64 = 10_000.0;

fn per_op(n: u32, f: impl Fn(u32)) -> f64 {
    // Best of five runs: the machine is shared, and the cost being measured is the floor.
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let cli = Cli::parse_from([
        "berth-server".to_string(),
        "--dev".into(),
        "--http-addr".into(),
        format!("127.0.0.1:{}", free()?),
        "--rpc-addr".into(),
        format!("127.0.0.1:{}", free()?),
        "--log-level".into(),
        "error".into(),
    ]);
    let acl: FileConfig = berth_api::config::parse_str(
        Path::new("bench.hcl"),
        "acl {\n  enabled = true\n  default_policy = \"deny\"\n}\n",
    )?;
    let cfg = resolve(
        &cli.flags,
        vec![acl],
        FileConfig::default(),
        "bench",
        Some(IpAddr::from([127, 0, 0, 1])),
    )?;
    let running = berth_server::start(cfg).await?;
    let node = running.node.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.is_leader() {
        anyhow::ensure!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let policy = Policy {
        id: uuid::Uuid::new_v4().to_string(),
        name: "web".into(),
        rules: "service \"web\" { policy = \"write\" }\nkey_prefix \"web/\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }\n".into(),
        ..Default::default()
    };
    node.write(Command::Acl(AclOp::SetPolicy(policy.clone())))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut secrets = Vec::new();
    for i in 0..10_000 {
        let t = Token {
            accessor_id: uuid::Uuid::new_v4().to_string(),
            secret_id: uuid::Uuid::new_v4().to_string(),
            description: format!("bench {i}"),
            policies: vec![Link {
                id: policy.id.clone(),
                name: policy.name.clone(),
            }],
            service_identities: vec![ServiceIdentity {
                service_name: format!("svc-{i}"),
                datacenters: Vec::new(),
            }],
            ..Default::default()
        };
        secrets.push(t.secret_id.clone());
        node.write(Command::Acl(AclOp::SetToken(t)))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let secret = secrets[0].clone();
    let check = |secret: &str| {
        let id = node.identity(Some(secret)).expect("token resolves");
        black_box(id.check(Resource::Service, "web", Access::Write)).is_ok()
    };
    anyhow::ensure!(check(&secret), "the token may write web");

    let warm = per_op(200_000, |_| {
        black_box(check(&secret));
    });
    // 1,000 different tokens, each resolved once before: the cache holds them all.
    for s in &secrets[..1000] {
        check(s);
    }
    let warm_many = per_op(200_000, |i| {
        black_box(check(&secrets[(i % 1000) as usize]));
    });
    // A cold resolution: every ACL write moves the table's index, so the next check of any
    // token rebuilds its authorizer (parses its policies and identities).
    let st_index_bump = || {
        let p = policy.clone();
        let node = node.clone();
        async move {
            let _ = node.write(Command::Acl(AclOp::SetPolicy(p))).await;
        }
    };
    let mut cold_total = Duration::ZERO;
    let rounds = 200;
    for i in 0..rounds {
        st_index_bump().await;
        let t = Instant::now();
        black_box(check(&secrets[i % secrets.len()]));
        cold_total += t.elapsed();
    }
    let cold = cold_total.as_nanos() as f64 / rounds as f64;

    println!("ACL check per request (token resolution + authorizer), 10,000 tokens in the store:");
    println!(
        "  warm cache, one token:       {:>8.0} ns  ({:.1}x under the 10 µs target)",
        warm,
        TARGET_NS / warm
    );
    println!(
        "  warm cache, 1,000 tokens:    {:>8.0} ns  ({:.1}x under the 10 µs target)",
        warm_many,
        TARGET_NS / warm_many
    );
    println!(
        "  cold (after an ACL write):   {:>8.0} ns  (warm is {:.0}x cheaper)",
        cold,
        cold / warm_many
    );
    running.shutdown().await;
    Ok(())
}
