//! Running one command as PID 1 would: in its own process group, with every catchable
//! signal passed on except SIGTERM (which starts a shutdown of the caller's choosing),
//! orphans reaped, and the command's exit code as ours.

use std::ffi::OsString;
use std::future::Future;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::pin::Pin;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Signals passed on to the child as they arrive. SIGTERM is the shutdown; SIGCHLD tells us
/// about the child; SIGKILL, SIGSTOP and the synchronous faults cannot be caught; SIGPIPE,
/// SIGURG, SIGXFSZ and the profiling timers are about our own sockets, files and clocks.
pub const FORWARDED: &[(libc::c_int, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGPWR, "SIGPWR"),
];

pub fn signal_name(sig: libc::c_int) -> String {
    if sig == libc::SIGTERM {
        return "SIGTERM".into();
    }
    FORWARDED
        .iter()
        .find(|(n, _)| *n == sig)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("signal {sig}"))
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no command given")]
    Empty,
    #[error("cannot run {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
}

impl SpawnError {
    /// The shell's convention: 127 when the program does not exist, 126 when it cannot be
    /// run.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::Start { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                127
            }
            _ => 126,
        }
    }
}

/// Our exit code for the child's end: its own code, or 128 + the signal that killed it,
/// as a shell reports it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn spawn(command: &[OsString]) -> Result<libc::pid_t, SpawnError> {
    let (program, args) = command.split_first().ok_or(SpawnError::Empty)?;
    let child = std::process::Command::new(program)
        .args(args)
        // Its own group: ECS (or `docker stop`, or a terminal's ^C) signalling the
        // container's process group must not reach Envoy before the drain has run.
        .process_group(0)
        .spawn()
        .map_err(|source| SpawnError::Start {
            program: program.to_string_lossy().into_owned(),
            source,
        })?;
    // The std handle is dropped without waiting: `reap` collects the status with waitpid.
    Ok(child.id() as libc::pid_t)
}

/// Waits for `pid` to end, reaping every other child on the way: as PID 1 of a container
/// we inherit the orphans of Envoy's (or a wrapper script's) children.
async fn reap(pid: libc::pid_t, mut sigchld: tokio::signal::unix::Signal) -> ExitStatus {
    loop {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out pointer; WNOHANG never blocks.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r == pid {
                return ExitStatus::from_raw(status);
            }
            if r > 0 {
                tracing::debug!(pid = r, "reaped an orphaned process");
                continue;
            }
            if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        // SIGCHLD can coalesce; the timeout is a backstop against a missed wake-up.
        let _ = tokio::time::timeout(Duration::from_secs(1), sigchld.recv()).await;
    }
}

fn send(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child. Only the child itself, as `docker kill` does to
    // PID 1: whether its own children get it is the child's business.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        tracing::debug!(
            pid,
            signal = %signal_name(sig),
            error = %std::io::Error::last_os_error(),
            "cannot signal the child"
        );
    }
}

type Shutdown = Pin<Box<dyn Future<Output = ()>>>;

async fn until_done(f: &mut Option<Shutdown>) {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Runs `command` until it exits and returns the exit code to exit with. The first SIGTERM
/// starts `on_sigterm` (futures do nothing until polled); when it finishes the child gets
/// SIGTERM. Later SIGTERMs are ignored. A command that cannot be started is reported on one
/// line of stderr.
pub async fn supervise(
    command: &[OsString],
    on_sigterm: impl Future<Output = ()> + 'static,
) -> anyhow::Result<i32> {
    // Every handler is in place before the child exists, so that no early signal takes its
    // default action on us (or, as PID 1, is dropped).
    let sigchld = signal(SignalKind::child())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let (tx, mut forwarded) = mpsc::unbounded_channel();
    for &(sig, _) in FORWARDED {
        let mut s = signal(SignalKind::from_raw(sig))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }

    // Outside a container (or under an init such as ECS's initProcessEnabled) orphans of the
    // child would go elsewhere; as a subreaper they come to us, as they would to PID 1, and
    // `reap` collects them. Failure only means they go to the real init.
    // SAFETY: prctl with an integer option and no pointers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let pid = match spawn(command) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("berth-envoy-entrypoint: {e}");
            return Ok(e.exit_code());
        }
    };
    tracing::info!(pid, command = ?command, "started");

    let exited = reap(pid, sigchld);
    tokio::pin!(exited);
    let mut on_sigterm = Some(on_sigterm);
    let mut shutdown: Option<Shutdown> = None;
    loop {
        tokio::select! {
            status = &mut exited => {
                let code = exit_code(status);
                tracing::info!(pid, code, status = %status, "the command exited");
                return Ok(code);
            }
            Some(sig) = forwarded.recv() => {
                tracing::info!(pid, signal = %signal_name(sig), "forwarding");
                send(pid, sig);
            }
            _ = sigterm.recv() => match on_sigterm.take() {
                Some(f) => {
                    tracing::info!("SIGTERM received: shutting down");
                    shutdown = Some(Box::pin(f));
                }
                None => tracing::info!("SIGTERM received again: ignored, the shutdown is already under way"),
            },
            _ = until_done(&mut shutdown) => {
                shutdown = None;
                tracing::info!(pid, "sending SIGTERM to the command");
                send(pid, libc::SIGTERM);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        // Raw wait statuses: exit code in the second byte, a fatal signal in the low bits.
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }

    #[test]
    fn spawn_errors_map_to_126_and_127() {
        let e = spawn(&[OsString::from("/nonexistent/berth-no-such-program")]).unwrap_err();
        assert_eq!(e.exit_code(), 127, "{e}");
        assert!(
            e.to_string().contains("/nonexistent/berth-no-such-program"),
            "{e}"
        );
        // A directory exists but cannot be executed.
        let e = spawn(&[OsString::from("/")]).unwrap_err();
        assert_eq!(e.exit_code(), 126, "{e}");
        assert_eq!(SpawnError::Empty.exit_code(), 126);
    }

    #[test]
    fn sigterm_is_not_forwarded() {
        assert!(FORWARDED.iter().all(|(s, _)| *s != libc::SIGTERM));
        assert!(FORWARDED.iter().all(|(s, _)| *s != libc::SIGCHLD));
        assert_eq!(signal_name(libc::SIGUSR1), "SIGUSR1");
    }
}
