//! What the load generator observes of the control-plane process and the machine: the server's
//! process (given, or the one listening on the target port), its memory (`VmHWM`, `VmRSS`) and
//! CPU time from `/proc`, machine CPU use from `/proc/stat`, and deltas of its Prometheus
//! metrics (`/metrics`) over a run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

/// Linux reports CPU times in clock ticks; 100 per second on every mainstream platform.
const CLOCK_TICKS: f64 = 100.0;

/// The socket inodes listening on TCP `port` in a `/proc/net/tcp{,6}` table.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local = cols.get(1)?;
            let state = cols.get(3)?;
            let inode = cols.get(9)?.parse::<u64>().ok()?;
            let p = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (p == port && *state == "0A").then_some(inode)
        })
        .collect()
}

/// The process listening on TCP `port` on this machine, found through `/proc` (needs
/// permission to read other processes' fds: same user or root).
pub fn find_listener(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(t) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&t, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// A `kB` field of `/proc/{pid}/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Fields of `/proc/{pid}/stat` after the command name (which may hold spaces): index 0 is
/// field 3 (state), so field N is at N - 3.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

fn ticks(f: &[&str], field: usize) -> Option<f64> {
    Some(f.get(field - 3)?.parse::<f64>().ok()? / CLOCK_TICKS)
}

/// utime + stime of `/proc/{pid}/stat`, in seconds.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let f = stat_fields(stat)?;
    Some(ticks(&f, 14)? + ticks(&f, 15)?)
}

/// cutime + cstime (children the process has waited for), in seconds.
fn reaped_children_seconds(stat: &str) -> Option<f64> {
    let f = stat_fields(stat)?;
    Some(ticks(&f, 16)? + ticks(&f, 17)?)
}

fn parent_of(stat: &str) -> Option<u32> {
    stat_fields(stat)?.get(1)?.parse().ok()
}

/// CPU seconds of a process and its children, live and exited: PostgreSQL's postmaster and
/// its backends (the postmaster reaps them, so exited backends land in its cutime/cstime).
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut total = cpu_seconds(&stat)? + reaped_children_seconds(&stat)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        if parent_of(&s) == Some(pid) {
            total += cpu_seconds(&s).unwrap_or(0.0);
        }
    }
    Some(total)
}

/// (busy, total) jiffies of the machine from the `cpu` line of `/proc/stat`.
pub fn machine_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// A process watched during a run.
pub struct Watched {
    pub pid: u32,
    pub how: &'static str,
}

impl Watched {
    /// `--server-pid` when given, else the process listening on `port`.
    pub fn locate(pid: Option<u32>, port: Option<u16>) -> Option<Self> {
        match pid {
            Some(pid) => Some(Self {
                pid,
                how: "--server-pid",
            }),
            None => port.and_then(find_listener).map(|pid| Self {
                pid,
                how: "listener of the target port (/proc/net/tcp)",
            }),
        }
    }

    fn status(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()
    }

    pub fn rss_kb(&self) -> Option<u64> {
        status_kb(&self.status()?, "VmRSS")
    }

    pub fn hwm_kb(&self) -> Option<u64> {
        status_kb(&self.status()?, "VmHWM")
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?)
    }
}

fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn machine() -> Option<(u64, u64)> {
    machine_jiffies(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// CPU and memory over a run: started before the load, sampled every second, read at the end.
pub struct Monitor {
    server: Option<Watched>,
    db: Option<u32>,
    db_cpu0: Option<f64>,
    started: Instant,
    server_cpu0: Option<f64>,
    own_cpu0: Option<f64>,
    machine0: Option<(u64, u64)>,
    peak_rss_kb: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub server_pid: Option<u32>,
    pub server_found_by: Option<&'static str>,
    /// `VmHWM` of the server at the end: its peak resident memory since it started.
    pub server_peak_memory_kb: Option<u64>,
    /// Largest `VmRSS` seen by one-second sampling during the run.
    pub server_peak_rss_during_run_kb: Option<u64>,
    pub server_rss_end_kb: Option<u64>,
    /// Server CPU time over wall time (1.0 = one core busy).
    pub server_cpu_cores: Option<f64>,
    /// PostgreSQL (postmaster of `--db-pid` and its backends) CPU time over wall time.
    pub db_cpu_cores: Option<f64>,
    pub loadgen_cpu_cores: Option<f64>,
    /// Busy share of all cores of the machine (everything running on it).
    pub machine_cpu_busy: Option<f64>,
    pub seconds: f64,
}

impl Monitor {
    /// Watches `server` and, when given, the PostgreSQL postmaster `db`.
    pub fn start(server: Option<Watched>, db: Option<u32>) -> Self {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampler = server.as_ref().map(|w| {
            let pid = w.pid;
            let peak = peak.clone();
            tokio::spawn(async move {
                let w = Watched { pid, how: "" };
                loop {
                    if let Some(rss) = w.rss_kb() {
                        peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        });
        Self {
            db,
            db_cpu0: db.and_then(tree_cpu_seconds),
            server_cpu0: server.as_ref().and_then(Watched::cpu_seconds),
            server,
            started: Instant::now(),
            own_cpu0: own_cpu_seconds(),
            machine0: machine(),
            peak_rss_kb: peak,
            sampler,
        }
    }

    pub fn finish(mut self) -> Usage {
        if let Some(s) = self.sampler.take() {
            s.abort();
        }
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let server = self.server.as_ref();
        let rss_end = server.and_then(Watched::rss_kb);
        let sampled = self.peak_rss_kb.load(std::sync::atomic::Ordering::Relaxed);
        Usage {
            server_pid: server.map(|w| w.pid),
            server_found_by: server.map(|w| w.how),
            server_peak_memory_kb: server.and_then(Watched::hwm_kb),
            server_peak_rss_during_run_kb: server
                .map(|_| sampled.max(rss_end.unwrap_or(0)))
                .filter(|k| *k > 0),
            server_rss_end_kb: rss_end,
            server_cpu_cores: match (self.server_cpu0, server.and_then(Watched::cpu_seconds)) {
                (Some(a), Some(b)) => Some((b - a) / secs),
                _ => None,
            },
            db_cpu_cores: match (self.db_cpu0, self.db.and_then(tree_cpu_seconds)) {
                (Some(a), Some(b)) => Some((b - a) / secs),
                _ => None,
            },
            loadgen_cpu_cores: match (self.own_cpu0, own_cpu_seconds()) {
                (Some(a), Some(b)) => Some((b - a) / secs),
                _ => None,
            },
            machine_cpu_busy: match (self.machine0, machine()) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                    Some((b1 - b0) as f64 / (t1 - t0) as f64)
                }
                _ => None,
            },
            seconds: secs,
        }
    }
}

impl Usage {
    pub fn lines(&self) -> Vec<String> {
        let mb = |k: Option<u64>| {
            k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "n/a".into())
        };
        let cores = |c: Option<f64>| c.map(|c| format!("{c:.2}")).unwrap_or_else(|| "n/a".into());
        let mut out = vec![];
        match self.server_pid {
            Some(pid) => out.push(format!(
                "server pid {pid} ({}): peak memory (VmHWM) {}, peak RSS during the run {}, RSS at the end {}",
                self.server_found_by.unwrap_or("?"),
                mb(self.server_peak_memory_kb),
                mb(self.server_peak_rss_during_run_kb),
                mb(self.server_rss_end_kb)
            )),
            None => out.push(
                "server process not found (pass --server-pid; the server must run on this machine)"
                    .into(),
            ),
        }
        out.push(format!(
            "CPU: server {} cores, PostgreSQL {} cores, load generator {} cores, whole machine {} busy",
            cores(self.server_cpu_cores),
            cores(self.db_cpu_cores),
            cores(self.loadgen_cpu_cores),
            self.machine_cpu_busy
                .map(|b| format!("{:.0}%", b * 100.0))
                .unwrap_or_else(|| "n/a".into())
        ));
        out
    }
}

/// One series of the Prometheus text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format (the subset the exporter writes: no escapes
/// inside label values other than `\"`, no timestamps).
pub fn parse_metrics(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.find('{') {
            Some(i) => (&head[..i], parse_labels(&head[i + 1..head.len() - 1])),
            None => (head, BTreeMap::new()),
        };
        out.push(Series {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(body) = after.strip_prefix('"') else {
            break;
        };
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else { break };
        out.insert(key, body[..end].replace("\\\"", "\""));
        rest = &body[end + 1..];
    }
    out
}

/// The value of a series (0 when absent).
fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> f64 {
    series
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Server-side view of a histogram between two scrapes: count, mean, and the upper bounds of
/// the buckets holding p50 and p99 (the exporter's buckets are coarse: 0.5, 1, 2.5, 5, 10 ms...).
pub fn histogram_delta(
    before: &[Series],
    after: &[Series],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<Value> {
    let count = value(after, &format!("{name}_count"), labels)
        - value(before, &format!("{name}_count"), labels);
    if count <= 0.0 {
        return None;
    }
    let sum = value(after, &format!("{name}_sum"), labels)
        - value(before, &format!("{name}_sum"), labels);
    let bucket = format!("{name}_bucket");
    let mut bounds: Vec<(f64, String)> = after
        .iter()
        .filter(|s| s.name == bucket)
        .filter_map(|s| {
            let le = s.labels.get("le")?;
            let v = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((v, le.clone()))
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    bounds.dedup_by(|a, b| a.1 == b.1);
    let at = |q: f64| -> Option<f64> {
        for (v, le) in &bounds {
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", le));
            let c = value(after, &bucket, &l) - value(before, &bucket, &l);
            if c >= q * count {
                return Some(*v);
            }
        }
        None
    };
    let bound_ms = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| v * 1e3);
    Some(json!({
        "count": count,
        "mean_ms": sum / count * 1e3,
        "p50_at_most_ms": bound_ms(at(0.5)),
        "p99_at_most_ms": bound_ms(at(0.99)),
    }))
}

/// A counter's increase between two scrapes, summed over series matching `labels`.
pub fn counter_delta(
    before: &[Series],
    after: &[Series],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    value(after, name, labels) - value(before, name, labels)
}

/// Label values of `label` on series named `name`.
pub fn label_values(series: &[Series], name: &str, label: &str) -> Vec<String> {
    let mut v: Vec<String> = series
        .iter()
        .filter(|s| s.name == name)
        .filter_map(|s| s.labels.get(label).cloned())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Server-side stage timings between two scrapes: request time by route, projector batches
/// (count, mean time, events per batch), appends and version conflicts.
pub fn stage_report(before: &[Series], after: &[Series], routes: &[(&str, &str)]) -> Value {
    let mut http = serde_json::Map::new();
    for (method, route) in routes {
        if let Some(h) = histogram_delta(
            before,
            after,
            "http_request_duration_seconds",
            &[("method", method), ("route", route)],
        ) {
            http.insert(format!("{method} {route}"), h);
        }
    }
    let mut projectors = serde_json::Map::new();
    for p in label_values(after, "projector_batch_seconds_count", "projector") {
        let Some(mut h) = histogram_delta(
            before,
            after,
            "projector_batch_seconds",
            &[("projector", &p)],
        ) else {
            continue;
        };
        let events = counter_delta(
            before,
            after,
            "projector_events_applied_total",
            &[("projector", &p)],
        );
        let batches = h["count"].as_f64().unwrap_or(0.0);
        h["events"] = json!(events);
        h["events_per_batch"] = json!(if batches > 0.0 { events / batches } else { 0.0 });
        projectors.insert(p, h);
    }
    json!({
        "http": http,
        "projectors": projectors,
        "events_appended": counter_delta(before, after, "events_appended_total", &[]),
        "append_duplicates": counter_delta(before, after, "append_duplicates_total", &[]),
        "append_conflicts": counter_delta(before, after, "append_conflicts_total", &[]),
    })
}

/// Human lines for a stage report.
pub fn stage_lines(stages: &Value) -> Vec<String> {
    let f = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "?".into())
    };
    let n = |v: &Value| format!("{:.0}", v.as_f64().unwrap_or(0.0));
    let mut out = Vec::new();
    if let Some(http) = stages["http"].as_object() {
        for (route, h) in http {
            out.push(format!(
                "server time {route}: mean {} ms, p50 <= {} ms, p99 <= {} ms (n={})",
                f(&h["mean_ms"]),
                f(&h["p50_at_most_ms"]),
                f(&h["p99_at_most_ms"]),
                n(&h["count"])
            ));
        }
    }
    if let Some(p) = stages["projectors"].as_object() {
        for (name, h) in p {
            out.push(format!(
                "projector {name}: {} batches, mean {} ms, p99 <= {} ms, {} events/batch",
                n(&h["count"]),
                f(&h["mean_ms"]),
                f(&h["p99_at_most_ms"]),
                f(&h["events_per_batch"])
            ));
        }
    }
    out.push(format!(
        "store: {} events appended, {} idempotent duplicates, {} version conflicts (retried)",
        n(&stages["events_appended"]),
        n(&stages["append_duplicates"]),
        n(&stages["append_conflicts"])
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_socket_of_a_port_is_found_in_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6161 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listening_inodes(table, 8080), vec![4242]);
        assert_eq!(listening_inodes(table, 8081), vec![6161]);
        assert!(listening_inodes(table, 9999).is_empty());
    }

    #[test]
    fn this_process_is_found_as_the_listener_of_its_own_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(find_listener(port), Some(std::process::id()));
        let w = Watched::locate(None, Some(port)).unwrap();
        assert!(w.hwm_kb().unwrap() > 0 && w.rss_kb().unwrap() > 0);
        assert!(w.cpu_seconds().is_some());
        // Read the process alone first: the tree, read later, holds at least that much.
        let own = w.cpu_seconds().unwrap();
        assert!(tree_cpu_seconds(std::process::id()).unwrap() >= own);
    }

    #[test]
    fn proc_fields_are_read() {
        let status = "Name:\tcontrol-plane\nVmHWM:\t  123456 kB\nVmRSS:\t   99999 kB\n";
        assert_eq!(status_kb(status, "VmHWM"), Some(123_456));
        assert_eq!(status_kb(status, "VmRSS"), Some(99_999));
        assert_eq!(status_kb(status, "VmSwap"), None);
        let stat =
            "4242 (control plane) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(parent_of(stat), Some(1));
        assert_eq!(reaped_children_seconds(stat), Some(0.0));
        let machine = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(machine_jiffies(machine), Some((150, 1000)));
    }

    #[test]
    fn histogram_deltas_give_count_mean_and_bucket_bounds() {
        let before = parse_metrics(
            r#"# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{method="GET",route="/x",le="0.001"} 10
http_request_duration_seconds_bucket{method="GET",route="/x",le="0.005"} 10
http_request_duration_seconds_bucket{method="GET",route="/x",le="+Inf"} 10
http_request_duration_seconds_sum{method="GET",route="/x"} 0.005
http_request_duration_seconds_count{method="GET",route="/x"} 10
events_appended_total{aggregate="Call"} 5
"#,
        );
        let after = parse_metrics(
            r#"http_request_duration_seconds_bucket{method="GET",route="/x",le="0.001"} 100
http_request_duration_seconds_bucket{method="GET",route="/x",le="0.005"} 109
http_request_duration_seconds_bucket{method="GET",route="/x",le="+Inf"} 110
http_request_duration_seconds_sum{method="GET",route="/x"} 0.105
http_request_duration_seconds_count{method="GET",route="/x"} 110
events_appended_total{aggregate="Call"} 25
events_appended_total{aggregate="User"} 1
"#,
        );
        let h = histogram_delta(
            &before,
            &after,
            "http_request_duration_seconds",
            &[("method", "GET"), ("route", "/x")],
        )
        .unwrap();
        assert_eq!(h["count"], 100.0);
        assert!((h["mean_ms"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(h["p50_at_most_ms"], 1.0);
        assert_eq!(h["p99_at_most_ms"], 5.0);
        assert_eq!(
            counter_delta(&before, &after, "events_appended_total", &[]),
            21.0
        );
        assert!(histogram_delta(&before, &after, "nothing", &[]).is_none());
    }

    #[test]
    fn label_values_with_quotes_and_commas_are_parsed() {
        let s = parse_metrics(r#"m{a="x,y",b="say \"hi\""} 2"#);
        assert_eq!(s[0].labels["a"], "x,y");
        assert_eq!(s[0].labels["b"], "say \"hi\"");
        assert_eq!(s[0].value, 2.0);
    }
}
