//! The transport floor for BENCHMARKS.md: the same TLS and HTTP stack as
//! `agentic-webhook serve` (rustls with the same cert resolver, the same
//! hyper-util connection handling and limits, axum, the same tokio runtime),
//! but a handler that reads the body and answers a fixed allowed review. The
//! load generator's throughput against this server is the most ours could
//! reach on the same machine; ours / floor is the overhead ratio.
//!
//! cargo run --release --example floor -- --addr 127.0.0.1:9443 --probe-addr 127.0.0.1:9080 --ca-out /tmp/floor-ca.crt

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agentic_webhook::certs::serving::{self as tls, CertStore, MinTlsVersion, TlsOptions};
use agentic_webhook::server::listener::{self, ConnLimits};
use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use clap::Parser;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9443")]
    addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9080")]
    probe_addr: SocketAddr,
    #[arg(long, default_value = "floor-ca.crt")]
    ca_out: PathBuf,
    #[arg(long)]
    disable_http2: bool,
}

const ALLOWED: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

async fn answer(body: Bytes) -> ([(&'static str, &'static str); 1], &'static [u8]) {
    std::hint::black_box(body);
    ([("content-type", "application/json")], ALLOWED)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (ca, pair) =
            agentic_webhook::certs::self_signed_localhost(Duration::from_secs(86_400))?;
        agentic_webhook::certs::write_ca_cert(&args.ca_out, &ca)?;
        let store = CertStore::new();
        store.set(tls::load_pair(
            pair.cert_pem.as_bytes(),
            pair.key_pem.as_bytes(),
        )?);
        let http2 = !args.disable_http2;
        let config = tls::server_config(
            store,
            &TlsOptions {
                min_version: MinTlsVersion::Tls12,
                http2,
                client_ca_pem: None,
            },
        )?;
        let app = Router::new()
            .route("/mutate", post(answer))
            .route("/validate", post(answer))
            .route("/convert", post(answer));
        let probes = Router::new().route("/readyz", get(|| async { "ok" }));
        let tcp = TcpListener::bind(args.addr).await?;
        let probe = TcpListener::bind(args.probe_addr).await?;
        tokio::spawn(async move { axum::serve(probe, probes).await });
        let stop = listener::Shutdown::default();
        let tracker = TaskTracker::new();
        let serving = tokio::spawn(listener::serve(
            tcp,
            TlsAcceptor::from(config),
            app,
            ConnLimits {
                http2,
                ..ConnLimits::default()
            },
            agentic_webhook::server::metrics::Metrics::register(
                &agentic_webhook::telemetry::Registry::new(),
            ),
            stop.clone(),
            tracker.clone(),
        ));
        agentic_webhook::server::termination_signal().await;
        stop.now();
        let _ = serving.await;
        anyhow::Ok(())
    })
}
