//! `agentic-webhook serve`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::admission::Policy;
use crate::conversion::Converter;
use crate::duration;
use crate::server::http::HttpLimits;
use crate::server::listener::ConnLimits;
use crate::server::metrics::Metrics;
use crate::server::reload::PairFiles;
use crate::server::tls::{MinTlsVersion, TlsOptions};
use crate::server::{self, CertSource, Handles, ServeConfig};

use super::PolicyArgs;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// HTTPS address for /mutate, /validate and /convert.
    #[arg(long, default_value = "0.0.0.0:8443", env = "AGENTIC_ADDR")]
    addr: SocketAddr,
    /// Plain HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", env = "AGENTIC_PROBE_ADDR")]
    probe_addr: SocketAddr,
    /// Serving certificate (PEM, leaf first). Reloaded when it changes.
    #[arg(long, requires = "tls_key", conflicts_with = "self_signed")]
    tls_cert: Option<PathBuf>,
    /// Serving key (PEM). Reloaded when it changes.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Generate a localhost/127.0.0.1 certificate at start (for local use).
    #[arg(long)]
    self_signed: bool,
    /// With --self-signed: where to write the CA certificate (for curl --cacert).
    #[arg(long, default_value = "agentic-webhook-ca.crt")]
    ca_out: PathBuf,
    /// How often to check the certificate files besides watching their directories.
    #[arg(long, default_value = "5s", value_parser = duration::flag)]
    cert_poll_interval: Duration,
    /// Oldest TLS version accepted.
    #[arg(long, value_enum, default_value = "1.2")]
    tls_min_version: MinTlsVersion,
    /// Offer only HTTP/1.1 (the HTTP/2 rapid-reset advisories made this a standard switch).
    #[arg(long)]
    disable_http2: bool,
    /// PEM bundle of CAs: require and verify a client certificate (the apiserver's).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Largest AdmissionReview body, bytes (larger: 413).
    #[arg(long, default_value_t = 8 << 20)]
    max_admission_body: usize,
    /// Largest ConversionReview body, bytes (larger: 413).
    #[arg(long, default_value_t = 64 << 20)]
    max_conversion_body: usize,
    /// Reviews handled at once; beyond it requests wait briefly, then get 429.
    #[arg(long, default_value_t = 256)]
    max_concurrent_reviews: usize,
    /// Request bodies held in memory at once, bytes.
    #[arg(long, default_value_t = 256 << 20)]
    max_inflight_body_bytes: usize,
    /// Open connections accepted at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Close a connection after this long without traffic.
    #[arg(long, default_value = "120s", value_parser = duration::flag)]
    idle_timeout: Duration,
    /// Bound on the TLS handshake.
    #[arg(long, default_value = "10s", value_parser = duration::flag)]
    handshake_timeout: Duration,
    /// Bound on receiving an HTTP/1.1 request's headers.
    #[arg(long, default_value = "10s", value_parser = duration::flag)]
    header_read_timeout: Duration,
    /// After SIGTERM, keep serving this long with /readyz false before closing the listener.
    #[arg(long, default_value = "0s", value_parser = duration::flag)]
    shutdown_delay: Duration,
    /// After closing the listener, wait at most this long for in-flight requests.
    #[arg(long, default_value = "20s", value_parser = duration::flag)]
    shutdown_grace: Duration,
    #[command(flatten)]
    policy: PolicyArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let certs = match (&args.tls_cert, &args.tls_key, args.self_signed) {
        (Some(cert), Some(key), false) => CertSource::Files(PairFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, true) => CertSource::SelfSigned {
            ca_out: args.ca_out.clone(),
        },
        _ => anyhow::bail!("give --tls-cert and --tls-key, or --self-signed"),
    };
    let client_ca_pem = match &args.client_ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let cfg = ServeConfig {
        addr: args.addr,
        probe_addr: args.probe_addr,
        certs,
        tls: TlsOptions {
            min_version: args.tls_min_version,
            http2: !args.disable_http2,
            client_ca_pem,
        },
        conn: ConnLimits {
            handshake_timeout: args.handshake_timeout,
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
            http2: !args.disable_http2,
            ..ConnLimits::default()
        },
        http: HttpLimits {
            admission_body: args.max_admission_body,
            conversion_body: args.max_conversion_body,
            max_concurrent: args.max_concurrent_reviews,
            max_body_bytes_in_flight: args.max_inflight_body_bytes,
            ..HttpLimits::default()
        },
        cert_poll_interval: args.cert_poll_interval,
        shutdown_delay: args.shutdown_delay,
        shutdown_grace: args.shutdown_grace,
    };
    let policy = Arc::new(Policy::new(args.policy.config()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(server::run(
        cfg,
        Handles::new(Metrics::new()),
        policy,
        Arc::new(Converter),
        server::termination_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
