//! Process metrics under the names client_golang's process collector uses
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, ...), so
//! the usual dashboards and alerts work unchanged. Read from /proc on every
//! scrape, as procfs does; elsewhere nothing is exported.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Kernel ticks per second in /proc: USER_HZ is 100 on every Linux ABI
/// (procfs hard-codes it too).
const USER_HZ: f64 = 100.0;

#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of the process.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

impl Sample {
    /// Read this process from /proc.
    pub fn read() -> Sample {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let mut s = Sample::default();
        if let Some(stat) = read("/proc/self/stat") {
            let boot = read("/proc/stat").and_then(|t| boot_time(&t));
            s.merge_stat(&stat, boot);
        }
        s.resident_bytes = read("/proc/self/status").and_then(|t| vm_rss_bytes(&t));
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        s.max_fds = read("/proc/self/limits").and_then(|t| max_open_files(&t));
        s
    }

    fn merge_stat(&mut self, stat: &str, boot_time: Option<f64>) {
        // The command name (field 2) may hold spaces and parentheses; the
        // fields after its closing parenthesis start at field 3 (state).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            self.cpu_seconds = Some((utime + stime) / USER_HZ);
        }
        self.virtual_bytes = field(23);
        if let (Some(start), Some(boot)) = (field(22), boot_time) {
            self.start_time_seconds = Some(boot + start / USER_HZ);
        }
    }
}

/// `btime` of /proc/stat: boot time, unix seconds.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS:   1234 kB` of /proc/self/status, in bytes.
fn vm_rss_bytes(status: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The soft limit of `Max open files` in /proc/self/limits.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    match line.split_whitespace().next()? {
        "unlimited" => Some(f64::INFINITY),
        n => n.parse().ok(),
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<f64>,
) -> Result<(), std::fmt::Error> {
    let Some(value) = value else { return Ok(()) };
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Sample::read();
        if let Some(cpu) = s.cpu_seconds {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
        }
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            s.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            s.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            s.start_time_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors.",
            s.open_fds,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            s.max_fds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_procfs_reads_them() {
        // A command name with spaces and a parenthesis, as the kernel
        // writes it.
        let stat = "4242 (agentic (web) hook) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 130 0 0 20 0 9 0 123456 73400320 4000 18446744073709551615";
        let mut s = Sample::default();
        s.merge_stat(stat, Some(1_700_000_000.0));
        assert_eq!(s.cpu_seconds, Some(3.8));
        assert_eq!(s.virtual_bytes, Some(73_400_320.0));
        assert_eq!(s.start_time_seconds, Some(1_700_000_000.0 + 1234.56));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000.0)
        );
        assert_eq!(
            vm_rss_bytes("Name:\tagentic\nVmRSS:\t   21404 kB\nVmData: 1 kB\n"),
            Some(21_404.0 * 1024.0)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1_048_576.0));
        assert_eq!(
            max_open_files("Max open files unlimited unlimited files"),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn this_process_reads_as_alive() {
        let s = Sample::read();
        if cfg!(target_os = "linux") {
            assert!(s.resident_bytes.is_some_and(|b| b > 1e5), "{s:?}");
            assert!(s.open_fds.is_some_and(|n| n >= 3.0), "{s:?}");
            assert!(s.start_time_seconds.is_some_and(|t| t > 1.6e9), "{s:?}");
            assert!(s.cpu_seconds.is_some(), "{s:?}");
        }
    }
}
