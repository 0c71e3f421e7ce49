//! The conventional `process_*` metrics (what Prometheus client libraries export), read from
//! `/proc/self` at scrape time. Rendered as text by hand because the CPU counter is fractional
//! seconds, which the `metrics` counters (integers) cannot hold. Elsewhere than Linux they are
//! simply absent.

use std::fmt::Write;

use super::defs::{
    Kind, MetricDef, PROCESS_CPU, PROCESS_FDS, PROCESS_RSS, PROCESS_START, PROCESS_THREADS,
};

/// Linux reports CPU times and start times in clock ticks of 1/100 s (USER_HZ, fixed for user
/// space on every architecture Kiln builds for).
const TICKS_PER_SECOND: f64 = 100.0;
/// Resident memory is reported in pages; 4 KiB on the platforms Kiln runs on.
const PAGE_BYTES: f64 = 4096.0;

fn write_metric(out: &mut String, def: &MetricDef, value: f64) {
    let kind = match def.kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    };
    let _ = writeln!(out, "# HELP {} {}", def.name, def.help);
    let _ = writeln!(out, "# TYPE {} {kind}", def.name);
    let _ = writeln!(out, "{} {value}", def.name);
}

/// The fields of `/proc/self/stat` after the command name (which may hold spaces).
fn stat_fields() -> Option<Vec<String>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The process metrics in the Prometheus text format (empty where `/proc` is not there).
pub fn render() -> String {
    let mut out = String::new();
    let Some(fields) = stat_fields() else {
        return out;
    };
    // Field numbers of proc(5), counted from 1 at the pid; `fields[0]` is field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        write_metric(&mut out, &PROCESS_CPU, (utime + stime) / TICKS_PER_SECOND);
    }
    if let Some(rss) = field(24) {
        write_metric(&mut out, &PROCESS_RSS, rss * PAGE_BYTES);
    }
    if let Some(threads) = field(20) {
        write_metric(&mut out, &PROCESS_THREADS, threads);
    }
    if let (Some(start), Some(boot)) = (field(22), boot_time()) {
        write_metric(&mut out, &PROCESS_START, boot + start / TICKS_PER_SECOND);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        write_metric(&mut out, &PROCESS_FDS, fds.count() as f64);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_metrics_are_read_on_linux() {
        let text = super::render();
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_threads",
                "process_start_time_seconds",
                "process_open_fds",
            ] {
                let line = text
                    .lines()
                    .find(|l| l.starts_with(&format!("{name} ")))
                    .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
                let value: f64 = line[name.len() + 1..].parse().expect("a number");
                assert!(value > 0.0 || name == "process_cpu_seconds_total", "{line}");
            }
        }
    }
}
