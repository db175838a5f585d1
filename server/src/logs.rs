//! Logging: stderr (text or JSON) plus a broadcast of each line for `/v1/agent/monitor`, with
//! a level that `/v1/agent/reload` can change at run time.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, OnceLock};

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: tracing::Level,
    pub text: String,
}

/// Lines logged by this process, for monitors; nothing is kept when nobody listens.
pub static MONITOR: LazyLock<broadcast::Sender<Arc<LogLine>>> =
    LazyLock::new(|| broadcast::channel(1024).0);

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The filter for a configured level: openraft narrates every vote and append at info, so it
/// stays at warnings unless debugging.
pub fn filter_for(level: &str) -> EnvFilter {
    let level = level.to_ascii_lowercase();
    let raft_level = if level == "debug" || level == "trace" {
        level.as_str()
    } else {
        "warn"
    };
    EnvFilter::new(format!(
        "{level},openraft={raft_level},h2=error,tower=warn,hyper=warn"
    ))
}

/// Parses a log level name as Consul's `-log-level` and `?loglevel=` take them.
pub fn parse_level(s: &str) -> Option<tracing::Level> {
    match s.to_ascii_lowercase().as_str() {
        "trace" => Some(tracing::Level::TRACE),
        "debug" => Some(tracing::Level::DEBUG),
        "info" => Some(tracing::Level::INFO),
        "warn" | "warning" => Some(tracing::Level::WARN),
        "err" | "error" => Some(tracing::Level::ERROR),
        _ => None,
    }
}

pub fn init(level: &str, json: bool) {
    let (filter, handle) = reload::Layer::new(filter_for(level));
    let _ = FILTER.set(handle);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(MonitorLayer)
        .try_init();
}

/// Changes the level of a running process. Errors when logging was not set up by [`init`].
pub fn set_level(level: &str) -> Result<(), String> {
    let handle = FILTER
        .get()
        .ok_or("logging is not reloadable in this process")?;
    handle
        .reload(filter_for(level))
        .map_err(|e| format!("cannot change the log level: {e}"))
}

struct MonitorLayer;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for MonitorLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if MONITOR.receiver_count() == 0 {
            return;
        }
        let meta = event.metadata();
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let text = format!("[{}] {}: {}", meta.level(), meta.target(), fields.0);
        let _ = MONITOR.send(Arc::new(LogLine {
            level: *meta.level(),
            text,
        }));
    }
}
