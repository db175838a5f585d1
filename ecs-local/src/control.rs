//! The daemon's control socket: one JSON request line, one JSON response line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SOCKET: &str = "daemon.sock";
pub const INFO: &str = "daemon.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Run {
        definition: String,
        cluster: Option<String>,
    },
    Ps,
    Describe {
        task: String,
    },
    Logs {
        task: String,
        container: Option<String>,
    },
    Stop {
        task: String,
    },
    Down,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: Value,
}

impl Response {
    pub fn ok(data: Value) -> Response {
        Response {
            ok: true,
            error: None,
            data,
        }
    }

    pub fn err(e: impl std::fmt::Display) -> Response {
        Response {
            ok: false,
            error: Some(e.to_string()),
            data: Value::Null,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no berth-ecs-local daemon is running in {dir} (cannot connect to {sock}: {source})")]
    NotRunning {
        dir: String,
        sock: String,
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon closed the connection without answering")]
    NoAnswer,
    #[error("the daemon sent an unreadable answer: {0}")]
    Decode(#[from] serde_json::Error),
}

/// What `daemon.json` says once the daemon is ready.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub bridge: String,
    pub gateway: String,
    pub subnet: String,
    pub cluster_arn: String,
    pub region: String,
    pub account: String,
    pub socket: PathBuf,
}

pub fn request(dir: &Path, req: &Request) -> Result<Response, ControlError> {
    let sock = dir.join(SOCKET);
    let mut s = UnixStream::connect(&sock).map_err(|source| ControlError::NotRunning {
        dir: dir.display().to_string(),
        sock: sock.display().to_string(),
        source,
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    if answer.trim().is_empty() {
        return Err(ControlError::NoAnswer);
    }
    Ok(serde_json::from_str(&answer)?)
}
