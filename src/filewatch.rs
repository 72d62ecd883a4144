//! Watch files that are replaced under us: a mounted Secret or ConfigMap is
//! updated by the kubelet swapping a `..data` symlink in its directory, which
//! a watch on the files themselves misses. So we watch the directories, also
//! poll, and compare contents: only a real change is reported, once.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct ReadError {
    pub path: String,
    pub source: std::io::Error,
}

/// The bytes of every watched file, in order, or why one could not be read.
pub type Contents = Result<Vec<Vec<u8>>, ReadError>;

fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    std::fs::read(path).map_err(|source| ReadError {
        path: path.display().to_string(),
        source,
    })
}

fn fingerprint(contents: &Contents) -> u64 {
    let mut h = DefaultHasher::new();
    match contents {
        Ok(files) => files.hash(&mut h),
        Err(e) => e.to_string().hash(&mut h),
    }
    h.finish()
}

/// What is on disk now, and a fingerprint of it (of the read error if any):
/// the baseline for [`watch`], so a change landing before the watcher starts
/// still counts as a change.
pub fn snapshot(paths: &[PathBuf]) -> (u64, Contents) {
    let contents = paths.iter().map(|p| read(p)).collect();
    (fingerprint(&contents), contents)
}

/// Call `changed` with the new contents each time they differ from the last
/// seen (starting from `baseline`), until `shutdown`.
pub async fn watch(
    paths: Vec<PathBuf>,
    baseline: u64,
    poll: Duration,
    shutdown: CancellationToken,
    mut changed: impl FnMut(Contents),
) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let _watcher = start_watcher(&paths, tx);
    let mut last = baseline;
    let mut tick = tokio::time::interval(poll.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            Some(()) = rx.recv() => {
                // Writers that replace several files one after the other
                // (a cert, then its key) would otherwise show a torn state.
                tokio::time::sleep(Duration::from_millis(250)).await;
                while rx.try_recv().is_ok() {}
            }
        }
        let (fp, contents) = snapshot(&paths);
        if fp != last {
            last = fp;
            changed(contents);
        }
    }
}

fn start_watcher(paths: &[PathBuf], tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "file watcher unavailable; polling only"))
    .ok()?;
    let mut dirs: Vec<PathBuf> = paths
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
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling only");
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_reported_once_and_a_rewrite_of_the_same_bytes_not_at_all() {
        let dir = std::env::temp_dir().join(format!("filewatch-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("a");
        let _ = std::fs::write(&file, b"one");
        let (baseline, _) = snapshot(std::slice::from_ref(&file));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(
            vec![file.clone()],
            baseline,
            Duration::from_millis(100),
            stop.clone(),
            move |c| {
                let _ = tx.send(c.map(|files| files.concat()).map_err(|e| e.to_string()));
            },
        ));
        let _ = std::fs::write(&file, b"one");
        let _ = std::fs::write(&file, b"two");
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(first.ok().flatten(), Some(Ok(b"two".to_vec())));
        let _ = std::fs::remove_file(&file);
        let gone = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert!(
            matches!(gone, Ok(Some(Err(ref e))) if e.contains("reading")),
            "{gone:?}"
        );
        stop.cancel();
        let _ = task.await;
        assert!(rx.recv().await.is_none(), "nothing after the one change");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
