//! The webhook server: HTTPS (rustls) for the reviews, plain HTTP for probes
//! and metrics, certificate reload, graceful shutdown. The handlers call the
//! pure cores through [`AdmissionService`] and [`ConversionService`].

pub mod budget;
pub(crate) mod early;
pub(crate) mod hold;
pub(crate) mod http;
pub mod listener;
pub(crate) mod memory;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::AdmissionService;
use crate::conversion::ConversionService;

use crate::certs::serving::{self as tls, CertStore, TlsOptions};
use crate::certs::watch as reload;
use crate::telemetry::Registry;
use crate::telemetry::probes::{self, Health};
use metrics::Metrics;

/// Where the serving pair comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// PEM files, reloaded when they change.
    Files(reload::PairFiles),
    /// A localhost pair made at start; its CA is written to `ca_out`.
    SelfSigned { ca_out: PathBuf },
    /// Installed into the store by someone else (the certificate manager).
    External,
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub probe_addr: SocketAddr,
    pub certs: CertSource,
    pub tls: TlsOptions,
    pub conn: listener::ConnLimits,
    pub http: http::HttpLimits,
    pub cert_poll_interval: Duration,
    /// How often to consider giving freed heap back to the OS (zero: never).
    pub memory_trim_interval: Duration,
    /// Keep serving this long after SIGTERM with /readyz false, so endpoints
    /// are updated before the listener closes.
    pub shutdown_delay: Duration,
    /// Upper bound on draining in-flight requests.
    pub shutdown_grace: Duration,
}

/// Shared handles a caller may want (the certificate manager, tests).
#[derive(Clone)]
pub struct Handles {
    pub certs: Arc<CertStore>,
    pub health: Arc<Health>,
    /// Everything `/metrics` exports.
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub cert_metrics: Arc<crate::certs::metrics::Metrics>,
}

impl Handles {
    /// The webhook's and its certificate's series, registered in `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        let certs = CertStore::new();
        let health = Health::new(certs.clone());
        Handles {
            certs,
            health,
            metrics: Metrics::register(&registry),
            cert_metrics: crate::certs::metrics::Metrics::register(&registry),
            registry,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("loading the serving certificate: {0}")]
    Certs(#[from] reload::LoadError),
    #[error("generating a self-signed certificate: {0}")]
    SelfSigned(#[from] crate::certs::CertError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Run until `stop` resolves (normally SIGTERM/SIGINT), then drain.
pub async fn run(
    cfg: ServeConfig,
    handles: Handles,
    admission: Arc<dyn AdmissionService>,
    conversion: Arc<dyn ConversionService>,
    stop: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let started = Instant::now();
    let Handles {
        certs,
        health,
        registry,
        metrics,
        cert_metrics,
    } = handles;

    let mut loaded_fingerprint = 0;
    match &cfg.certs {
        CertSource::Files(files) => {
            let (pair, fp) = reload::load_files(files)?;
            loaded_fingerprint = fp;
            reload::install(&certs, &cert_metrics, pair);
        }
        CertSource::SelfSigned { ca_out } => {
            let (ca, pair) =
                crate::certs::self_signed_localhost(Duration::from_secs(365 * 86_400))?;
            crate::certs::write_ca_cert(ca_out, &ca)?;
            let loaded = tls::load_pair(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())?;
            reload::install(&certs, &cert_metrics, loaded);
            tracing::info!(ca = %ca_out.display(), "self-signed certificate for localhost/127.0.0.1; CA written");
        }
        CertSource::External => {}
    }

    let tls_config = tls::server_config(certs.clone(), &cfg.tls)?;
    let https = TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.addr,
            source,
        })?;
    let probe = TcpListener::bind(cfg.probe_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.probe_addr,
            source,
        })?;
    let https_addr = https.local_addr().unwrap_or(cfg.addr);
    let probe_addr = probe.local_addr().unwrap_or(cfg.probe_addr);

    let shutdown = listener::Shutdown::default();
    let tracker = TaskTracker::new();

    let probe_token = CancellationToken::new();
    let probe_router = probes::router(health.clone(), registry);
    let probe_task = tokio::spawn({
        let token = probe_token.clone();
        async move {
            let res = axum::serve(probe, probe_router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "probe server failed");
            }
        }
    });

    if let CertSource::Files(files) = &cfg.certs {
        tokio::spawn(reload::watch(
            files.clone(),
            loaded_fingerprint,
            certs.clone(),
            cert_metrics.clone(),
            cfg.cert_poll_interval,
            shutdown.close.clone(),
        ));
    }

    let app = http::App::new(admission, conversion, metrics.clone(), cfg.http.clone());
    let router = http::router(app);
    tokio::spawn(memory::trim_after_closes(
        cfg.memory_trim_interval,
        shutdown.close.clone(),
    ));
    let accept = tokio::spawn(listener::serve(
        https,
        TlsAcceptor::from(tls_config),
        router,
        cfg.conn.clone(),
        metrics.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));

    tracing::info!(
        https = %https_addr,
        probes = %probe_addr,
        http2 = cfg.tls.http2,
        client_auth = cfg.tls.client_ca_pem.is_some(),
        startup_ms = started.elapsed().as_millis() as u64,
        "serving"
    );

    stop.await;
    tracing::info!(delay = ?cfg.shutdown_delay, grace = ?cfg.shutdown_grace, "shutting down: readiness off");
    health.begin_shutdown();
    // While endpoints catch up, keep serving, but tell every connection to
    // leave, so the clients retire them themselves (a pooled connection we
    // closed could be in use by the client at that instant).
    shutdown.retire.cancel();
    if !cfg.shutdown_delay.is_zero() {
        tokio::time::sleep(cfg.shutdown_delay).await;
    }
    // Stop accepting; every open connection finishes what it has in flight,
    // idle ones close once quiet.
    shutdown.close.cancel();
    let _ = accept.await;
    tracker.close();
    if tokio::time::timeout(cfg.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "shutdown grace elapsed with connections still open"
        );
    }
    probe_token.cancel();
    let _ = probe_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
