//! `agentic-webhook serve`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use tokio_util::sync::CancellationToken;

use crate::admission::Policy;
use crate::certs::manage::{CertManager, ManagerConfig};
use crate::certs::serving::{MinTlsVersion, TlsOptions};
use crate::certs::watch::PairFiles;
use crate::conversion::Converter;
use crate::duration;
use crate::server::budget;
use crate::server::http::HttpLimits;
use crate::server::listener::ConnLimits;
use crate::server::{self, CertSource, Handles, ServeConfig};

use super::PolicyArgs;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    kube: super::KubeArgs,
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
    /// Manage certificates in the cluster: a CA in a Secret, a serving
    /// certificate issued in memory and renewed, the CA injected into both
    /// webhook configurations and the CRD.
    #[arg(long, conflicts_with_all = ["tls_cert", "self_signed"])]
    manage_certs: bool,
    /// With --manage-certs: namespace of the CA Secret and of the Service.
    #[arg(long, env = "POD_NAMESPACE", default_value = "agentic-system")]
    cert_namespace: String,
    /// With --manage-certs: the CA Secret.
    #[arg(long, default_value = "agentic-webhook-ca")]
    ca_secret: String,
    /// With --manage-certs: the Service the apiserver calls (its DNS names go in the certificate).
    #[arg(long, default_value = "agentic-webhook")]
    service_name: String,
    /// With --manage-certs: name of both webhook configurations.
    #[arg(long, default_value = "agentic-webhook")]
    webhook_configuration: String,
    /// With --manage-certs: the CRD whose conversion webhook gets the caBundle.
    #[arg(long, default_value = crate::cli::migrate::CRD_NAME)]
    crd_name: String,
    /// With --manage-certs: an IP address for the serving certificate, for a
    /// server the apiserver reaches by IP (`manifests --url https://IP:PORT`); repeatable.
    #[arg(long = "cert-ip", value_name = "IP")]
    cert_ips: Vec<std::net::IpAddr>,
    /// With --manage-certs: serving certificate lifetime.
    #[arg(long, default_value = "720h", value_parser = duration::flag)]
    cert_lifetime: Duration,
    /// With --manage-certs: CA lifetime.
    #[arg(long, default_value = "87600h", value_parser = duration::flag)]
    ca_lifetime: Duration,
    /// With --manage-certs: renew (and rotate the CA) after this fraction of the lifetime.
    #[arg(long, default_value_t = 2.0 / 3.0)]
    renew_fraction: f64,
    /// With --manage-certs: longest wait for the headers of one Kubernetes
    /// API response.
    #[arg(long, default_value = "30s", value_parser = duration::positive_flag)]
    api_timeout: Duration,
    /// With --self-signed: where to write the CA certificate (for curl --cacert).
    #[arg(long, default_value = "agentic-webhook-ca.crt")]
    ca_out: PathBuf,
    /// How often to check the certificate files besides watching their directories.
    #[arg(long, default_value = "5s", value_parser = duration::flag)]
    cert_poll_interval: Duration,
    /// After connections close, give freed heap back to the OS at most this
    /// often (0 disables).
    #[arg(long, default_value = "10s", value_parser = duration::flag)]
    memory_trim_interval: Duration,
    /// Oldest TLS version accepted.
    #[arg(long, value_enum, default_value = "1.2")]
    tls_min_version: MinTlsVersion,
    /// Offer only HTTP/1.1 (the HTTP/2 rapid-reset advisories made this a standard switch).
    #[arg(long)]
    disable_http2: bool,
    /// PEM bundle of CAs: require and verify a client certificate (the apiserver's).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Memory the process may use (bytes, or a quantity like 128Mi): the
    /// limits below are sized so the peak stays under 75 % of it. Default:
    /// the cgroup's limit (the manifests pass the container's
    /// limits.memory); without one, the defaults below.
    #[arg(long, env = "AGENTIC_MEMORY_LIMIT", value_parser = memory_limit)]
    memory_limit: Option<u64>,
    /// Where the cgroup memory files are (tests point it elsewhere).
    #[arg(long, default_value = "/sys/fs/cgroup", hide = true)]
    cgroup_root: PathBuf,
    /// Largest AdmissionReview body, bytes (larger: 413) [default: 8 MiB,
    /// or sized from --memory-limit].
    #[arg(long)]
    max_admission_body: Option<usize>,
    /// Largest ConversionReview body, bytes (larger: 413) [default: 64 MiB,
    /// or sized from --memory-limit].
    #[arg(long)]
    max_conversion_body: Option<usize>,
    /// Reviews handled at once; beyond it requests wait briefly, then get
    /// 429 [default: 256, or sized from --memory-limit].
    #[arg(long)]
    max_concurrent_reviews: Option<usize>,
    /// Memory for requests at once, bytes: bodies and what decoding them
    /// costs (estimated before decoding) [default: 256 MiB, or sized from
    /// --memory-limit].
    #[arg(long)]
    max_inflight_body_bytes: Option<usize>,
    /// Open connections accepted at once [default: 1024, or sized from
    /// --memory-limit].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Close a connection after this long without traffic.
    #[arg(long, default_value = "120s", value_parser = duration::flag)]
    idle_timeout: Duration,
    /// Bound on the TLS handshake.
    #[arg(long, default_value = "10s", value_parser = duration::flag)]
    handshake_timeout: Duration,
    /// Bound on receiving an HTTP/1.1 request's headers.
    #[arg(long, default_value = "10s", value_parser = duration::flag)]
    header_read_timeout: Duration,
    /// Retire each connection after this long (±10 % jitter): HTTP/2 gets
    /// a graceful GOAWAY, HTTP/1.1 `Connection: close` on its next
    /// response. The apiserver keeps webhook connections for as long as
    /// they live and a Service balances per connection, so without it
    /// replicas added later get no traffic. 0: never.
    #[arg(long, default_value = "2m", value_parser = duration::flag)]
    max_connection_age: Duration,
    /// After a connection is retired by age, how long its requests may
    /// still run before it is closed under them (idle HTTP/1.1 connections
    /// are never cut: the client may be sending on them).
    #[arg(long, default_value = "30s", value_parser = duration::flag)]
    max_connection_age_grace: Duration,
    /// After SIGTERM, keep serving this long with /readyz false, answering
    /// with `Connection: close` / GOAWAY so clients leave by themselves;
    /// then close the listener.
    #[arg(long, default_value = "0s", value_parser = duration::flag)]
    shutdown_delay: Duration,
    /// After closing the listener, wait at most this long for in-flight requests.
    #[arg(long, default_value = "20s", value_parser = duration::flag)]
    shutdown_grace: Duration,
    #[command(flatten)]
    policy: PolicyArgs,
}

fn memory_limit(text: &str) -> Result<u64, String> {
    match crate::quantity::value(text)? {
        v if v >= 1.0 && v < u64::MAX as f64 => Ok(v as u64),
        _ => Err(format!("{text:?} is not a memory size")),
    }
}

/// The limits: sized from the memory limit (flag, else cgroup), each
/// overridden by its own flag.
fn sized(args: &ServeArgs) -> (Option<u64>, budget::Sized) {
    let limit = args
        .memory_limit
        .or_else(|| budget::cgroup_limit(&args.cgroup_root));
    let base = limit.map_or(budget::UNLIMITED, budget::size);
    (
        limit,
        budget::Sized {
            request_memory: args.max_inflight_body_bytes.unwrap_or(base.request_memory),
            admission_body: args.max_admission_body.unwrap_or(base.admission_body),
            conversion_body: args.max_conversion_body.unwrap_or(base.conversion_body),
            max_concurrent: args.max_concurrent_reviews.unwrap_or(base.max_concurrent),
            max_connections: args.max_connections.unwrap_or(base.max_connections),
        },
    )
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (memory_limit, limits) = sized(&args);
    crate::server::memory::tune_allocator();
    let certs = match (&args.tls_cert, &args.tls_key, args.self_signed) {
        (Some(cert), Some(key), false) => CertSource::Files(PairFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, true) => CertSource::SelfSigned {
            ca_out: args.ca_out.clone(),
        },
        (None, None, false) if args.manage_certs => CertSource::External,
        _ => anyhow::bail!("give --tls-cert and --tls-key, --self-signed, or --manage-certs"),
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
            max_connections: limits.max_connections,
            http2: !args.disable_http2,
            max_age: Some(args.max_connection_age).filter(|age| !age.is_zero()),
            max_age_grace: args.max_connection_age_grace,
            ..ConnLimits::default()
        },
        http: HttpLimits {
            admission_body: limits.admission_body,
            conversion_body: limits.conversion_body,
            max_concurrent: limits.max_concurrent,
            max_body_bytes_in_flight: limits.request_memory,
            ..HttpLimits::default()
        },
        cert_poll_interval: args.cert_poll_interval,
        memory_trim_interval: args.memory_trim_interval,
        shutdown_delay: args.shutdown_delay,
        shutdown_grace: args.shutdown_grace,
    };
    let policy = Arc::new(Policy::new(args.policy.config()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let handles = Handles::new(crate::telemetry::Registry::new());
        tracing::info!(
            memory_limit = memory_limit.unwrap_or(0),
            request_memory = limits.request_memory,
            admission_body = limits.admission_body,
            conversion_body = limits.conversion_body,
            concurrent_reviews = limits.max_concurrent,
            connections = limits.max_connections,
            "limits"
        );
        handles.metrics.limits(memory_limit, &limits);
        let stop_certs = CancellationToken::new();
        if args.manage_certs {
            // Not ready until our CA is in every caBundle.
            handles.health.set_bundles_ready(false);
            let client = crate::apiclient::infer(&args.kube.target(), args.api_timeout)
                .await
                .context("building the kube client")?;
            let ns = &args.cert_namespace;
            let svc = &args.service_name;
            let manager = CertManager::new(
                client,
                ManagerConfig {
                    namespace: ns.clone(),
                    ca_secret: args.ca_secret.clone(),
                    mutating: args.webhook_configuration.clone(),
                    validating: args.webhook_configuration.clone(),
                    crd: args.crd_name.clone(),
                    dns_names: vec![
                        svc.clone(),
                        format!("{svc}.{ns}"),
                        format!("{svc}.{ns}.svc"),
                        format!("{svc}.{ns}.svc.cluster.local"),
                    ],
                    ips: args.cert_ips.clone(),
                    cert_lifetime: args.cert_lifetime,
                    ca_lifetime: args.ca_lifetime,
                    renew_fraction: args.renew_fraction,
                },
                handles.certs.clone(),
                handles.health.clone(),
                handles.cert_metrics.clone(),
            );
            tokio::spawn(manager.run(stop_certs.clone()));
        }
        let res = server::run(
            cfg,
            handles,
            policy,
            Arc::new(Converter),
            server::termination_signal(),
        )
        .await;
        stop_certs.cancel();
        res.map_err(anyhow::Error::from)
    })?;
    Ok(ExitCode::SUCCESS)
}
