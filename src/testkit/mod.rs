//! Test and benchmark support, built only with the `testkit` feature (the
//! tests, benches and examples turn it on): an HTTP/1.1 and HTTP/2 client
//! over rustls that tells a lost request from one never processed, and
//! realistic request bodies for benchmarks and the load generator.

pub mod client;
pub mod core;
pub mod workload;

/// Write a fresh local CA and a serving pair for 127.0.0.1/localhost into
/// `dir` (`ca.crt`, `tls.crt`, `tls.key`): for servers the load generator
/// starts that cannot make their own (agnhost).
pub fn write_localhost_certs(dir: &std::path::Path) -> anyhow::Result<()> {
    use crate::certs::generate::{self_signed_localhost, write_dir};
    let (ca, pair) = self_signed_localhost(std::time::Duration::from_secs(24 * 3600))?;
    write_dir(dir, &ca, &pair)?;
    Ok(())
}

/// Whether loopback is the only network interface (a network namespace of
/// our own): where agnhost, which binds every interface, may be started.
pub fn loopback_only() -> bool {
    std::fs::read_to_string("/proc/net/dev").is_ok_and(|t| {
        t.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .all(|name| name.trim() == "lo")
    })
}
