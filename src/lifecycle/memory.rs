//! What the reconciler remembers between reconciles, bounded by the
//! sessions in its cache: what each current runner was told, and the
//! status it last wrote (which its watch cache may not show yet).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::api::status::{ReconciledRepo, ReconciledWorkflow};
use crate::api::v1alpha2::SessionStatus;

use super::plan::{Notice, Observed};

/// How long a written status stands in for the cache's copy: the watch
/// delivers our own write within milliseconds; past this, the cache wins
/// (someone else may have edited the status since).
const WRITTEN_TTL: Duration = Duration::from_secs(300);

/// What one session's current runner pod has been told. Keyed by the
/// session's uid and bound to the pod's uid, so a retry, a restart or a
/// re-created session starts untold; dropped when the runner or the session
/// goes. After a controller restart this is empty, and the status
/// (`reconciledWorkflow`/`reconciledRepos`, reset with every new attempt)
/// says what this attempt's runner already has.
#[derive(Default)]
struct RunnerNotices {
    runner: String,
    workflow: Option<Notice<Option<ReconciledWorkflow>>>,
    repos: Option<Notice<Vec<ReconciledRepo>>>,
}

/// The fields of the status this controller owns; the runner writes the
/// others (`lastActivityTime`, `sdkSessionId`, `sdkRestartCount`).
pub fn owned_status(st: &SessionStatus) -> SessionStatus {
    SessionStatus {
        last_activity_time: None,
        sdk_session_id: None,
        sdk_restart_count: None,
        ..st.clone()
    }
}

/// The status to plan from: the cache's, unless it does not show what we
/// last wrote yet; then ours, with the fields others own from the cache.
pub fn effective_status(
    cached: Option<&SessionStatus>,
    written: Option<&SessionStatus>,
) -> Option<SessionStatus> {
    match (cached, written) {
        (_, None) => cached.cloned(),
        (Some(c), Some(w)) if owned_status(c) == *w => Some(c.clone()),
        (c, Some(w)) => Some(SessionStatus {
            last_activity_time: c.and_then(|c| c.last_activity_time.clone()),
            sdk_session_id: c.and_then(|c| c.sdk_session_id.clone()),
            sdk_restart_count: c.and_then(|c| c.sdk_restart_count),
            ..w.clone()
        }),
    }
}

#[derive(Default)]
pub struct Memory {
    notices: Mutex<HashMap<String, RunnerNotices>>,
    written: Mutex<HashMap<String, (SessionStatus, Instant)>>,
}

impl Memory {
    /// The notices sent to `runner` (the current pod's uid) of `session`;
    /// what was told to any other runner is forgotten.
    pub fn told(&self, session: &str, runner: Option<&str>, observed: &mut Observed) {
        let Ok(mut map) = self.notices.lock() else {
            return;
        };
        match (runner, map.get(session)) {
            (Some(runner), Some(told)) if told.runner == runner => {
                observed.workflow_notice = told.workflow.clone();
                observed.repos_notice = told.repos.clone();
            }
            (_, Some(_)) => {
                map.remove(session);
            }
            (_, None) => {}
        }
    }

    pub fn record_workflow(
        &self,
        session: &str,
        runner: &str,
        target: Option<ReconciledWorkflow>,
        result: &Result<(), String>,
        at: Timestamp,
    ) {
        self.with_runner(session, runner, |told| {
            record(&mut told.workflow, runner, target, result, at)
        });
    }

    pub fn record_repos(
        &self,
        session: &str,
        runner: &str,
        target: Vec<ReconciledRepo>,
        result: &Result<(), String>,
        at: Timestamp,
    ) {
        self.with_runner(session, runner, |told| {
            record(&mut told.repos, runner, target, result, at)
        });
    }

    fn with_runner(&self, session: &str, runner: &str, f: impl FnOnce(&mut RunnerNotices)) {
        if let Ok(mut map) = self.notices.lock() {
            let told = map.entry(session.to_owned()).or_default();
            if told.runner != runner {
                *told = RunnerNotices {
                    runner: runner.to_owned(),
                    ..RunnerNotices::default()
                };
            }
            f(told);
        }
    }

    /// Runners whose notices are remembered.
    pub fn notice_entries(&self) -> usize {
        self.notices.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// We wrote `status` (the owned part) for `session`.
    pub fn wrote(&self, session: &str, status: SessionStatus) {
        if let Ok(mut w) = self.written.lock() {
            w.insert(session.to_owned(), (status, Instant::now()));
        }
    }

    /// The status to plan from (see [`effective_status`]); forgets our
    /// write once the cache shows it, or once it is too old to trust.
    pub fn status_for(
        &self,
        session: &str,
        cached: Option<&SessionStatus>,
    ) -> Option<SessionStatus> {
        let Ok(mut w) = self.written.lock() else {
            return cached.cloned();
        };
        let written = match w.get(session) {
            Some((_, at)) if at.elapsed() >= WRITTEN_TTL => None,
            Some((st, _)) if cached.map(owned_status).as_ref() == Some(st) => None,
            Some((st, _)) => Some(st.clone()),
            None => None,
        };
        if written.is_none() {
            w.remove(session);
        }
        effective_status(cached, written.as_ref())
    }

    /// Written statuses the cache has not shown yet.
    #[cfg(test)]
    pub fn written_entries(&self) -> usize {
        self.written.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Keep only what belongs to these sessions (the rest were deleted and
    /// will never be reconciled again).
    pub fn retain(&self, sessions: &HashSet<String>) {
        if let Ok(mut map) = self.notices.lock() {
            map.retain(|k, _| sessions.contains(k));
        }
        if let Ok(mut map) = self.written.lock() {
            map.retain(|k, _| sessions.contains(k));
        }
    }
}

fn record<T: PartialEq + Clone>(
    slot: &mut Option<Notice<T>>,
    runner: &str,
    target: T,
    result: &Result<(), String>,
    at: Timestamp,
) {
    let previous = slot
        .take()
        .filter(|n| n.runner == runner && n.target == target && !n.ok)
        .map_or(0, |n| n.failures);
    *slot = Some(Notice {
        fresh: false,
        runner: runner.to_owned(),
        target,
        ok: result.is_ok(),
        message: result.clone().err().unwrap_or_default(),
        at,
        failures: if result.is_ok() { 0 } else { previous + 1 },
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status::Phase;

    fn st(phase: Phase, sdk: Option<&str>) -> SessionStatus {
        SessionStatus {
            phase: Some(phase),
            attempt: Some(1),
            sdk_session_id: sdk.map(String::from),
            ..SessionStatus::default()
        }
    }

    #[test]
    fn a_cache_that_lags_our_write_is_read_through_it() {
        let m = Memory::default();
        m.wrote("u1", owned_status(&st(Phase::Creating, None)));
        // The cache still shows the status before our write, plus the
        // runner's own field: we plan from ours, with the runner's field.
        let seen = m.status_for("u1", Some(&st(Phase::Pending, Some("sdk-1"))));
        assert_eq!(seen, Some(st(Phase::Creating, Some("sdk-1"))));
        assert_eq!(m.written_entries(), 1);
        // The cache catches up: it is the truth again and the memory goes.
        let caught_up = st(Phase::Creating, Some("sdk-2"));
        assert_eq!(
            m.status_for("u1", Some(&caught_up)),
            Some(caught_up.clone())
        );
        assert_eq!(m.written_entries(), 0);
        assert_eq!(m.status_for("u1", Some(&caught_up)), Some(caught_up));
    }

    #[test]
    fn notices_count_for_their_runner_only_and_memory_is_bounded_by_sessions() {
        let m = Memory::default();
        let wf = None;
        m.record_workflow("u1", "pod-a", wf.clone(), &Ok(()), Timestamp::UNIX_EPOCH);
        let mut seen = Observed::default();
        m.told("u1", Some("pod-a"), &mut seen);
        assert!(
            seen.workflow_notice
                .is_some_and(|n| n.ok && n.runner == "pod-a")
        );
        let mut other = Observed::default();
        m.told("u1", Some("pod-b"), &mut other);
        assert!(other.workflow_notice.is_none());
        assert_eq!(m.notice_entries(), 0, "another runner: forgotten");
        m.record_workflow("u1", "pod-b", wf, &Err("503".into()), Timestamp::UNIX_EPOCH);
        m.wrote("u1", SessionStatus::default());
        m.retain(&HashSet::from(["u2".to_owned()]));
        assert_eq!((m.notice_entries(), m.written_entries()), (0, 0));
    }
}
