//! Container health checks: the Docker/ECS state machine, and running one probe inside a
//! container's namespaces.

use std::time::Duration;

use crate::taskdef::HealthCheck;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "UNKNOWN",
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

impl From<&HealthCheck> for HealthConfig {
    fn from(h: &HealthCheck) -> Self {
        // ECS rejects intervals under 5 s; tests here use 1 s, so anything from 1 s is taken.
        HealthConfig {
            interval: Duration::from_secs(h.interval.unwrap_or(30).max(1)),
            timeout: Duration::from_secs(h.timeout.unwrap_or(5).max(1)),
            retries: h.retries.unwrap_or(3).max(1),
            start_period: Duration::from_secs(h.start_period.unwrap_or(0)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// `None` when the probe timed out or could not be started.
    pub exit_code: Option<i32>,
    pub output: String,
}

impl ProbeResult {
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0)
    }
}

#[derive(Debug, Clone)]
pub struct HealthMachine {
    pub cfg: HealthConfig,
    pub status: HealthStatus,
    pub since: Option<String>,
    pub exit_code: Option<i32>,
    pub output: Option<String>,
    failures: u32,
    start_period_over: bool,
}

impl HealthMachine {
    pub fn new(cfg: HealthConfig) -> Self {
        HealthMachine {
            cfg,
            status: HealthStatus::Unknown,
            since: None,
            exit_code: None,
            output: None,
            failures: 0,
            start_period_over: false,
        }
    }

    /// Records one probe's result, `elapsed` after the container started; true when the
    /// status changed. As in Docker, failures inside the start period do not count, and the
    /// first success ends the start period.
    pub fn record(&mut self, elapsed: Duration, r: &ProbeResult, now: &str) -> bool {
        self.exit_code = r.exit_code;
        self.output = Some(r.output.clone());
        let before = self.status;
        if r.passed() {
            self.failures = 0;
            self.start_period_over = true;
            self.status = HealthStatus::Healthy;
        } else if self.start_period_over || elapsed >= self.cfg.start_period {
            self.start_period_over = true;
            self.failures += 1;
            if self.failures >= self.cfg.retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        let changed = before != self.status;
        if changed || self.since.is_none() && self.status != HealthStatus::Unknown {
            self.since = Some(now.to_string());
        }
        changed
    }

    pub fn metadata(&self) -> berth_ecs::metadata::Health {
        berth_ecs::metadata::Health {
            status: self.status.as_str().to_string(),
            status_since: self.since.clone(),
            exit_code: self.exit_code,
            output: self.output.clone(),
        }
    }
}

/// Probe output kept for the metadata document (Docker keeps 4 KiB; ECS shows less).
pub const MAX_OUTPUT: usize = 1024;

pub fn truncate_output(mut bytes: Vec<u8>) -> String {
    bytes.truncate(MAX_OUTPUT);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(retries: u32, start_period: u64) -> HealthConfig {
        HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_secs(start_period),
        }
    }

    fn ok() -> ProbeResult {
        ProbeResult {
            exit_code: Some(0),
            output: "fine".into(),
        }
    }

    fn fail() -> ProbeResult {
        ProbeResult {
            exit_code: Some(1),
            output: "bad".into(),
        }
    }

    #[test]
    fn unknown_then_healthy_then_unhealthy_after_retries() {
        let mut m = HealthMachine::new(cfg(3, 0));
        assert_eq!(m.status, HealthStatus::Unknown);
        assert!(m.record(Duration::from_secs(1), &ok(), "t1"));
        assert_eq!(m.status, HealthStatus::Healthy);
        assert_eq!(m.since.as_deref(), Some("t1"));
        assert!(!m.record(Duration::from_secs(2), &fail(), "t2"));
        assert!(!m.record(Duration::from_secs(3), &fail(), "t3"));
        assert_eq!(m.status, HealthStatus::Healthy);
        assert!(m.record(Duration::from_secs(4), &fail(), "t4"));
        assert_eq!(m.status, HealthStatus::Unhealthy);
        assert_eq!(m.since.as_deref(), Some("t4"));
        assert_eq!(m.metadata().output.as_deref(), Some("bad"));
        assert!(m.record(Duration::from_secs(5), &ok(), "t5"));
        assert_eq!(m.status, HealthStatus::Healthy);
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut m = HealthMachine::new(cfg(2, 0));
        m.record(Duration::ZERO, &fail(), "t");
        m.record(Duration::ZERO, &ok(), "t");
        m.record(Duration::ZERO, &fail(), "t");
        assert_eq!(m.status, HealthStatus::Healthy);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut m = HealthMachine::new(cfg(1, 10));
        assert!(!m.record(Duration::from_secs(1), &fail(), "t"));
        assert!(!m.record(Duration::from_secs(5), &fail(), "t"));
        assert_eq!(m.status, HealthStatus::Unknown);
        assert!(m.record(Duration::from_secs(11), &fail(), "t"));
        assert_eq!(m.status, HealthStatus::Unhealthy);
        // A success inside the start period ends it.
        let mut m = HealthMachine::new(cfg(1, 10));
        m.record(Duration::from_secs(1), &ok(), "t");
        m.record(Duration::from_secs(2), &fail(), "t");
        assert_eq!(m.status, HealthStatus::Unhealthy);
    }

    #[test]
    fn a_timed_out_probe_is_a_failure_and_defaults_apply() {
        let mut m = HealthMachine::new(cfg(1, 0));
        let timed_out = ProbeResult {
            exit_code: None,
            output: "timed out".into(),
        };
        assert!(!timed_out.passed());
        assert!(m.record(Duration::ZERO, &timed_out, "t"));
        let c = HealthConfig::from(&HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
        });
        assert_eq!(
            c,
            HealthConfig {
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(5),
                retries: 3,
                start_period: Duration::ZERO,
            }
        );
        assert_eq!(truncate_output(vec![b'a'; 5000]).len(), MAX_OUTPUT);
    }
}
