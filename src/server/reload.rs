//! Reload the serving pair from disk when it changes.
//!
//! A mounted Secret is rotated by the kubelet swapping a `..data` symlink in
//! the directory; a watch on the files themselves misses that. So we watch
//! the directories and also poll, and compare file contents. A new pair that
//! is unreadable, broken or mismatched is refused: the old one keeps
//! serving, the error is logged and counted (once per distinct bad state).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::tls::{CertStore, ServingCert, TlsError, load_pair};

#[derive(Clone, Debug)]
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Cert and key bytes, or why they could not be read.
type PairBytes = Result<(Vec<u8>, Vec<u8>), LoadError>;

fn fingerprint(res: &PairBytes) -> u64 {
    let mut h = DefaultHasher::new();
    match res {
        Ok((c, k)) => {
            c.hash(&mut h);
            k.hash(&mut h);
        }
        Err(e) => e.to_string().hash(&mut h),
    }
    h.finish()
}

/// What is on disk now: a fingerprint of the bytes (or of the read error).
fn snapshot(files: &PairFiles) -> (u64, PairBytes) {
    let res = read(&files.cert).and_then(|c| read(&files.key).map(|k| (c, k)));
    (fingerprint(&res), res)
}

/// The loaded pair and the fingerprint of the exact bytes it came from, the
/// baseline for [`watch`] (a change landing before the watcher starts must
/// still count as a change).
pub fn load_files(files: &PairFiles) -> Result<(ServingCert, u64), LoadError> {
    let (fp, res) = snapshot(files);
    let (cert, key) = res?;
    Ok((load_pair(&cert, &key)?, fp))
}

/// Install a pair and report its expiry.
pub fn install(store: &CertStore, metrics: &Metrics, cert: ServingCert) {
    metrics.cert_expiry.set(cert.not_after);
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
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let _watcher = start_watcher(&files, tx);
    let mut last = loaded_fingerprint;
    let mut tick = tokio::time::interval(poll.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            Some(()) = rx.recv() => {
                // Writers that replace cert and key one after the other
                // would otherwise show us a mismatched pair in between.
                tokio::time::sleep(Duration::from_millis(250)).await;
                while rx.try_recv().is_ok() {}
            }
        }
        let (fingerprint, res) = snapshot(&files);
        if fingerprint == last {
            continue;
        }
        last = fingerprint;
        let loaded = res.and_then(|(c, k)| load_pair(&c, &k).map_err(LoadError::from));
        match loaded {
            Ok(cert) => {
                metrics.cert_reload(true);
                install(&store, &metrics, cert);
            }
            Err(e) => {
                metrics.cert_reload(false);
                let serving = store
                    .current()
                    .map(|c| c.serial.clone())
                    .unwrap_or_default();
                tracing::error!(error = %e, keeping_serial = %serving, "serving certificate reload failed; keeping the current pair");
            }
        }
    }
}

fn start_watcher(files: &PairFiles, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "file watcher unavailable; polling only"))
    .ok()?;
    let mut dirs: Vec<PathBuf> = [&files.cert, &files.key]
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            }
        })
        .collect();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling only");
        }
    }
    Some(watcher)
}
