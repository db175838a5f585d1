//! `berth-server` command line. Exit codes: 0 clean stop, 1 runtime failure, 2 bad usage or
//! configuration — each failure printed as one line on stderr.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Parser;

use berth_server::config::{self, Cli, Command, TlsCaCommand, TlsCertCommand, TlsCommand};
use berth_server::tls;

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth-server: {msg}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let argv = berth_api::cli::normalize_args(std::env::args_os());
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Some(Command::Tls(cmd)) => run_tls(cmd),
        None => run_server(cli.flags),
    }
}

fn run_tls(cmd: TlsCommand) -> ExitCode {
    let result = match cmd {
        TlsCommand::Ca(TlsCaCommand::Create { dir, days, domain }) => {
            tls::create_ca(&dir, days, &domain)
        }
        TlsCommand::Cert(TlsCertCommand::Create(a)) => {
            let ca =
                a.ca.clone()
                    .unwrap_or_else(|| a.dir.join("berth-agent-ca.pem"));
            let key = a
                .key
                .clone()
                .unwrap_or_else(|| a.dir.join("berth-agent-ca-key.pem"));
            let kind = if a.server {
                tls::CertKind::Server
            } else {
                tls::CertKind::Client
            };
            tls::create_cert(
                &a.dir,
                kind,
                &ca,
                &key,
                &a.dc,
                &a.domain,
                a.days,
                &a.additional_dnsname,
                &a.additional_ipaddress,
            )
        }
    };
    match result {
        Ok((cert, key)) => {
            println!("==> Saved {}", cert.display());
            println!("==> Saved {}", key.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

fn run_server(flags: config::Flags) -> ExitCode {
    berth_server::util::limit_malloc_arenas();
    let env: HashMap<String, String> = std::env::vars().collect();
    let files = match config::load_files(&config::config_files(&flags, &env)) {
        Ok(f) => f,
        Err(e) => return fail(2, e),
    };
    let env_cfg = match config::from_env(&env) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    let cfg = match config::resolve(
        &flags,
        files,
        env_cfg,
        &berth_server::util::hostname(),
        berth_server::util::first_private_ipv4(),
    ) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    berth_server::logs::init(&cfg.log_level, cfg.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let running = match berth_server::start(cfg).await {
            Ok(r) => r,
            Err(e) => return fail(1, e),
        };
        let _ = running.node.reload.set(Box::new(move || reload(&flags)));
        let leave = running.node.leave.clone();
        let node = running.node.clone();
        tokio::select! {
            _ = wait_for_signal(node) => {}
            _ = leave.notified() => tracing::info!("leaving on request"),
        }
        tracing::info!("shutting down");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Re-reads flags, files and environment; what can change at run time (the log level) takes
/// effect, the rest waits for a restart, as with Consul.
fn reload(flags: &config::Flags) -> Result<(), String> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let files =
        config::load_files(&config::config_files(flags, &env)).map_err(|e| e.to_string())?;
    let env_cfg = config::from_env(&env).map_err(|e| e.to_string())?;
    let cfg = config::resolve(
        flags,
        files,
        env_cfg,
        &berth_server::util::hostname(),
        berth_server::util::first_private_ipv4(),
    )
    .map_err(|e| e.to_string())?;
    berth_server::logs::set_level(&cfg.log_level)?;
    tracing::info!(log_level = %cfg.log_level, "configuration reloaded");
    Ok(())
}

async fn wait_for_signal(node: std::sync::Arc<berth_server::node::Node>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                if let Some(Err(e)) = node.reload.get().map(|f| f()) {
                    tracing::error!(error = %e, "reload failed; keeping the running configuration");
                }
            }
        }
    }
}
