//! Counters, gauges and timing samples, rendered as Consul's `/v1/agent/metrics` JSON or as
//! Prometheus text (`?format=prometheus`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

type Labels = Vec<(String, String)>;

#[derive(Default, Clone, Copy)]
struct Summary {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    sum_sq: f64,
}

impl Summary {
    fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        self.sum += v;
        self.sum_sq += v * v;
    }

    fn json(&self, name: &str, labels: &Labels) -> Value {
        let n = self.count.max(1) as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        json!({
            "Name": name, "Count": self.count, "Rate": self.sum / 10.0, "Sum": self.sum,
            "Min": self.min, "Max": self.max, "Mean": mean, "Stddev": var.sqrt(),
            "Labels": labels_json(labels),
        })
    }
}

/// A gauge read at render time (Raft indexes, table sizes, ...).
pub type GaugeSource = Box<dyn Fn() -> Vec<(String, Labels, f64)> + Send + Sync>;

#[derive(Default)]
pub struct Registry {
    counters: Mutex<BTreeMap<(String, Labels), Summary>>,
    samples: Mutex<BTreeMap<(String, Labels), Summary>>,
    sources: Mutex<Vec<GaugeSource>>,
}

fn labels_json(labels: &Labels) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    pub fn incr(&self, name: &str, by: u64) {
        self.incr_labeled(name, Vec::new(), by);
    }

    pub fn incr_labeled(&self, name: &str, labels: Labels, by: u64) {
        lock(&self.counters)
            .entry((name.to_string(), labels))
            .or_default()
            .add(by as f64);
    }

    /// Records a duration, in milliseconds as Consul's samples are.
    pub fn observe(&self, name: &str, labels: Labels, d: Duration) {
        lock(&self.samples)
            .entry((name.to_string(), labels))
            .or_default()
            .add(d.as_secs_f64() * 1000.0);
    }

    pub fn add_gauge_source(&self, source: GaugeSource) {
        lock(&self.sources).push(source);
    }

    fn gauges(&self) -> Vec<(String, Labels, f64)> {
        let mut out: Vec<_> = lock(&self.sources).iter().flat_map(|s| s()).collect();
        if let Some(rss) = resident_bytes() {
            out.push(("berth.runtime.rss_bytes".into(), Vec::new(), rss as f64));
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Consul's JSON shape.
    pub fn render_json(&self) -> Value {
        let gauges: Vec<Value> = self
            .gauges()
            .into_iter()
            .map(|(n, l, v)| json!({"Name": n, "Value": v, "Labels": labels_json(&l)}))
            .collect();
        let counters: Vec<Value> = lock(&self.counters)
            .iter()
            .map(|((n, l), s)| s.json(n, l))
            .collect();
        let samples: Vec<Value> = lock(&self.samples)
            .iter()
            .map(|((n, l), s)| s.json(n, l))
            .collect();
        json!({
            "Timestamp": utc_timestamp(SystemTime::now()),
            "Gauges": gauges,
            "Points": [],
            "Counters": counters,
            "Samples": samples,
        })
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let mut typed = std::collections::HashSet::new();
        let mut line = |out: &mut String, name: &str, kind: &str, labels: &Labels, v: f64| {
            let n = prom_name(name);
            if typed.insert(n.clone()) {
                let _ = writeln!(out, "# TYPE {n} {kind}");
            }
            let _ = writeln!(out, "{n}{} {v}", prom_labels(labels));
        };
        for (n, l, v) in self.gauges() {
            line(&mut out, &n, "gauge", &l, v);
        }
        for ((n, l), s) in lock(&self.counters).iter() {
            line(&mut out, &format!("{n}.total"), "counter", l, s.sum);
        }
        for ((n, l), s) in lock(&self.samples).iter() {
            line(&mut out, &format!("{n}.sum"), "counter", l, s.sum);
            line(
                &mut out,
                &format!("{n}.count"),
                "counter",
                l,
                s.count as f64,
            );
        }
        out
    }
}

fn prom_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn prom_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{}=\"{v}\"", prom_name(k))
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// `2026-11-24 08:00:00 +0000 UTC`, the form Go's `time.Time` prints and Consul uses.
fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// This process's resident set size, from /proc (Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_consul_json_and_prometheus_text() {
        let r = Registry::default();
        r.incr("berth.agent.sync.writes", 2);
        r.incr("berth.agent.sync.writes", 3);
        r.observe(
            "berth.http.request",
            vec![("method".into(), "GET".into())],
            Duration::from_millis(4),
        );
        r.add_gauge_source(Box::new(|| {
            vec![("berth.raft.term".into(), Vec::new(), 7.0)]
        }));
        let j = r.render_json();
        assert_eq!(j["Counters"][0]["Count"], 2);
        assert_eq!(j["Counters"][0]["Sum"], 5.0);
        assert!(
            j["Gauges"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["Name"] == "berth.raft.term" && g["Value"] == 7.0)
        );
        assert_eq!(j["Samples"][0]["Labels"]["method"], "GET");
        let p = r.render_prometheus();
        assert!(
            p.contains("# TYPE berth_raft_term gauge\nberth_raft_term 7\n"),
            "{p}"
        );
        assert!(p.contains("berth_agent_sync_writes_total 5"), "{p}");
        assert!(
            p.contains("berth_http_request_count{method=\"GET\"} 1"),
            "{p}"
        );
    }

    #[test]
    fn timestamps_look_like_go() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_478_400 + 3_723);
        assert_eq!(utc_timestamp(t), "2026-11-24 01:02:03 +0000 UTC");
    }
}
