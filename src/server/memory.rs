//! Giving freed heap back to the operating system.
//!
//! glibc keeps what closed connections freed (TLS and HTTP/2 buffers, ~12 KB
//! each) in its heap: after 1,000 connections come and go, RSS stays ~12 MB
//! above where it started, and a webhook's memory limit is sized on its
//! steady state. `malloc_trim` hands free pages back. It walks the heap and
//! holds the arena locks while it does, so it runs only after connections
//! have closed (a burst ended, clients cycled, an oversized body was cut
//! off), at most once per interval, off the async workers; a steady set of
//! keep-alive connections never triggers it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Connections closed since start, process-wide like the heap it guards.
static CLOSED: AtomicU64 = AtomicU64::new(0);

/// Held by a connection's task; counts the close when dropped, however the
/// task ends (normal close, error, timeout, panic).
pub struct CloseCounter;

impl Drop for CloseCounter {
    fn drop(&mut self) {
        CLOSED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Release free heap pages to the OS; true if anything was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim only reorganises the allocator's own free lists
    // under its locks; it takes no pointers and is thread-safe.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl, macOS) return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

/// Large buffers (request bodies, converted reviews) straight from and back
/// to the OS: glibc otherwise raises its mmap threshold after the first big
/// free (up to 32 MiB) and serves later bodies from arenas that keep the
/// pages, so RSS would track the largest mix of bodies ever seen, per
/// thread, instead of the bodies in flight that the budget counts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    // SAFETY: mallopt sets an allocator parameter; no pointers, called
    // before the server allocates request memory.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// Whether a tick should trim: connections closed since the last look.
pub fn should_trim(closed_before: u64, closed_now: u64) -> bool {
    closed_now > closed_before
}

/// Every `interval`, trim if a connection closed since the last tick.
/// Zero disables.
pub async fn trim_after_closes(interval: Duration, stop: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = CLOSED.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = CLOSED.load(Ordering::Relaxed);
        if should_trim(seen, now) {
            let started = Instant::now();
            let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
            tracing::debug!(
                closed = now - seen,
                released,
                took_us = started.elapsed().as_micros() as u64,
                "heap trimmed after connections closed"
            );
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_when_connections_went_away() {
        assert!(should_trim(0, 1));
        assert!(should_trim(7, 1007));
        assert!(!should_trim(3, 3));
        assert!(!should_trim(0, 0));
    }
}
