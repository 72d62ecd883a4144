//! Reload the serving pair from disk when it changes (see [`crate::filewatch`]).
//! A new pair that is unreadable, broken or mismatched is refused: the old
//! one keeps serving, the error is logged and counted (once per distinct bad
//! state).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::serving::{CertStore, ServingCert, TlsError, load_pair};
use crate::filewatch::{self, Contents, ReadError};

#[derive(Clone, Debug)]
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PairFiles {
    fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn load(contents: Contents) -> Result<ServingCert, LoadError> {
    match contents?.as_slice() {
        [cert, key] => Ok(load_pair(cert, key)?),
        _ => Err(LoadError::Tls(TlsError::NoCertificate)),
    }
}

/// The loaded pair and the fingerprint of the exact bytes it came from, the
/// baseline for [`watch`].
pub fn load_files(files: &PairFiles) -> Result<(ServingCert, u64), LoadError> {
    let (fp, contents) = filewatch::snapshot(&files.paths());
    Ok((load(contents)?, fp))
}

/// Install a pair and report its expiry.
pub fn install(store: &CertStore, metrics: &Metrics, cert: ServingCert) {
    metrics.expiry.set(cert.not_after);
    tracing::info!(serial = %cert.serial, not_after = cert.not_after, "serving certificate loaded");
    store.set(cert);
}

/// Watch `files` until `shutdown`; the initial pair must already be installed.
pub async fn watch(
    files: PairFiles,
    loaded_fingerprint: u64,
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    filewatch::watch(
        files.paths(),
        loaded_fingerprint,
        poll,
        shutdown,
        |contents| match load(contents) {
            Ok(cert) => {
                metrics.reload(true);
                install(&store, &metrics, cert);
            }
            Err(e) => {
                metrics.reload(false);
                let serving = store
                    .current()
                    .map(|c| c.serial.clone())
                    .unwrap_or_default();
                tracing::error!(error = %e, keeping_serial = %serving, "serving certificate reload failed; keeping the current pair");
            }
        },
    )
    .await;
}
