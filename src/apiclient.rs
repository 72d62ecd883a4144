//! The Kubernetes API client every subcommand uses.
//!
//! kube's default client has no response timeout (so exec and watches are
//! not cut), which means an apiserver or proxy that accepts a request and
//! never answers parks the caller forever: a reconcile worker, the
//! watcher's initial LIST, a migrate page. We bound the time to the
//! response *headers*, like client-go's `rest.Config.Timeout` for
//! non-watch calls; a watch gets its headers at once and then streams, so
//! it is untouched (kube-runtime's idle timeout guards a silent watch).

use std::time::Duration;

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::timeout::TimeoutLayer;

/// The layer that fails a request whose response has not started within
/// `timeout` (`kube::Error::Service` wrapping tower's `Elapsed`).
pub fn deadline(timeout: Duration) -> TimeoutLayer {
    TimeoutLayer::new(timeout)
}

/// A client from `config` with the response deadline.
pub fn from_config(config: Config, timeout: Duration) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&deadline(timeout))
        .build())
}

/// The in-cluster or kubeconfig client, with the response deadline.
pub async fn infer(timeout: Duration) -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    from_config(config, timeout)
}

/// True when `e` is the deadline firing rather than an API answer.
pub fn is_timeout(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Service(inner) if inner.is::<tower::timeout::error::Elapsed>())
}
