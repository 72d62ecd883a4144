//! The reconciler's pure core: `(session, observed world, now) -> Plan`.
//!
//! No I/O. The driver turns the plan's actions into API calls, feeds notice
//! results back in as `Observed`, and writes the planned status. Every
//! status the planner produces is a transition V22 allows.
//!
//! The three ways the old operator lost work are impossible by construction:
//! - a workflow notice is planned only once `RunnerStarted` is True, a failed
//!   notice is recorded (`WorkflowReconciled=False/UpdateFailed`) and retried
//!   with backoff, and `observedGeneration` advances only when repos and
//!   workflow are reconciled for that generation;
//! - the runner *container* state is what counts: a terminated runner beside
//!   a live sidecar is a finished attempt, whatever the pod phase says;
//! - a failed attempt below `max_attempts` is retried on a fresh pod.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::common::{ActiveWorkflow, repo_name};
use crate::api::status::{
    Condition, ConditionStatus, Phase, ReconciledRepo, ReconciledWorkflow, StoppedReason,
};
use crate::api::v1alpha2::{Repo, SessionSpec, SessionStatus};

pub(crate) mod conditions {
    pub const POD_CREATED: &str = "PodCreated";
    pub const RUNNER_STARTED: &str = "RunnerStarted";
    pub const REPOS_RECONCILED: &str = "ReposReconciled";
    pub const WORKFLOW_RECONCILED: &str = "WorkflowReconciled";
    pub const READY: &str = "Ready";
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
}
use conditions::*;

#[derive(Clone, Debug, PartialEq)]
pub struct PlanConfig {
    pub max_attempts: i64,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig { max_attempts: 3 }
    }
}

/// What the user asked for through `ambient-code.io/desired-phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired {
    Running,
    Stopped,
}

impl Desired {
    pub fn parse(s: Option<&str>) -> Option<Desired> {
        match s {
            Some("Running") => Some(Desired::Running),
            Some("Stopped") => Some(Desired::Stopped),
            _ => None,
        }
    }
}

/// The session as the planner needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionView<'a> {
    pub name: &'a str,
    pub generation: i64,
    pub desired: Option<Desired>,
    pub spec: &'a SessionSpec,
    pub status: Option<&'a SessionStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// The runner container, not the pod: a sidecar can keep a pod Running
/// long after the runner is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunnerState {
    /// No status for the runner container yet.
    Unknown,
    Waiting {
        reason: String,
    },
    Running {
        ready: bool,
    },
    Terminated {
        exit_code: i32,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub name: String,
    /// `metadata.uid`: names repeat (a restart reuses attempt 1), uids do
    /// not, so this is what a notice is bound to.
    pub uid: String,
    /// `status.podIP`, where notices go (never a Service a tenant could
    /// point elsewhere).
    pub ip: Option<String>,
    pub phase: PodPhase,
    /// `status.reason` of the pod (`Evicted`, ...).
    pub reason: Option<String>,
    /// `deletionTimestamp` is set.
    pub deleting: bool,
    pub runner: RunnerState,
    /// The repos the pod was built with (the runner clones them at start).
    pub repos: Vec<Repo>,
}

/// The result of the last notice of one kind sent to a runner.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice<T> {
    /// Sent during the reconcile being planned (its result is news).
    pub fresh: bool,
    /// The uid of the runner pod it was sent to: a notice counts only for
    /// that runner, never for the next attempt's or a restart's.
    pub runner: String,
    pub target: T,
    pub ok: bool,
    pub message: String,
    pub at: Timestamp,
    /// Consecutive failures for this target.
    pub failures: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The runner pod of the current attempt.
    pub pod: Option<PodView>,
    /// Runner pods of other attempts still present.
    pub stale_pods: Vec<String>,
    /// The session's Service exists and carries the reconciler's mark.
    pub service: bool,
    /// The current attempt's pod name is taken by a pod the reconciler did
    /// not make: it is neither adopted nor overwritten.
    pub name_taken: bool,
    /// The Service name is taken by a Service the reconciler did not make.
    pub foreign_service: bool,
    /// The last notices sent, whichever runner they went to (the planner
    /// uses only those sent to the current pod).
    pub workflow_notice: Option<Notice<Option<ReconciledWorkflow>>>,
    pub repos_notice: Option<Notice<Vec<ReconciledRepo>>>,
}

impl Observed {
    /// `notice` if it was sent to the runner that is current now.
    fn for_current<'a, T>(&self, notice: &'a Option<Notice<T>>) -> Option<&'a Notice<T>> {
        let pod = self.pod.as_ref()?;
        notice
            .as_ref()
            .filter(|n| !pod.uid.is_empty() && n.runner == pod.uid)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateService,
    /// Build the pod `<session>-runner-<attempt>` from the current spec.
    CreatePod {
        name: String,
        attempt: i64,
    },
    DeletePod {
        name: String,
    },
    NotifyWorkflow(Option<ReconciledWorkflow>),
    NotifyRepos(Vec<ReconciledRepo>),
    ClearDesiredPhase,
}

/// Something an operator wants to read in `kubectl describe`: published as
/// an Event on the session once the status that records it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Happened {
    pub warning: bool,
    /// PascalCase, e.g. `AttemptFailed`.
    pub reason: &'static str,
    /// What the controller did, e.g. `Retry`.
    pub action: &'static str,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The full status the session should have.
    pub status: SessionStatus,
    /// Whether `status` differs from the current one.
    pub status_changed: bool,
    pub actions: Vec<Action>,
    /// When to look again (`None`: on the next change).
    pub requeue: Option<Duration>,
    pub events: Vec<Happened>,
}

pub fn pod_name(session: &str, attempt: i64) -> String {
    format!("{session}-runner-{attempt}")
}

pub fn service_name(session: &str) -> String {
    format!("session-{session}")
}

/// Backoff for a notice that failed `failures` times in a row: 1 s, 2 s, 4 s … 5 min.
pub fn notice_backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

/// The repos the runner should have, as status records them.
pub fn desired_repos(spec: &SessionSpec) -> Vec<ReconciledRepo> {
    spec.repos().iter().map(reconciled_repo).collect()
}

pub fn reconciled_repo(r: &Repo) -> ReconciledRepo {
    ReconciledRepo {
        name: Some(repo_name(&r.url).to_owned()),
        url: Some(r.url.clone()),
        branch: Some(r.branch.clone().unwrap_or_else(|| "main".to_owned())),
        ..ReconciledRepo::default()
    }
}

/// The workflow the runner should have loaded (none without a gitUrl).
pub fn desired_workflow(spec: &SessionSpec) -> Option<ReconciledWorkflow> {
    spec.active_workflow
        .as_ref()
        .filter(|w| w.git_url.as_deref().is_some_and(|u| !u.is_empty()))
        .map(|w: &ActiveWorkflow| ReconciledWorkflow {
            git_url: w.git_url.clone(),
            branch: Some(w.branch.clone().unwrap_or_else(|| "main".to_owned())),
            path: w.path.clone(),
            ..ReconciledWorkflow::default()
        })
}

struct Planner<'a> {
    s: &'a SessionView<'a>,
    obs: &'a Observed,
    cfg: &'a PlanConfig,
    now: Timestamp,
    now_text: String,
    st: SessionStatus,
    actions: Vec<Action>,
    requeue: Option<Duration>,
    events: Vec<Happened>,
}

pub fn plan(s: &SessionView<'_>, obs: &Observed, now: Timestamp, cfg: &PlanConfig) -> Plan {
    let now = now.round(jiff::Unit::Second).unwrap_or(now);
    let current = s.status.cloned().unwrap_or_default();
    let mut p = Planner {
        s,
        obs,
        cfg,
        now,
        now_text: now.to_string(),
        st: current.clone(),
        actions: Vec::new(),
        requeue: None,
        events: Vec::new(),
    };
    match current.phase.clone() {
        None => p.new_session(),
        Some(Phase::Pending) => p.pending(),
        Some(Phase::Creating) => p.creating(),
        Some(Phase::Running) => p.running(),
        Some(Phase::Stopping) => p.stopping(),
        Some(Phase::Stopped | Phase::Completed | Phase::Failed | Phase::Error) => p.finished(),
        // A phase this release does not know: touch nothing.
        Some(Phase::Other(_)) => {}
    }
    for name in &obs.stale_pods {
        p.delete_pod(name);
    }
    let Planner {
        st,
        actions,
        requeue,
        events,
        ..
    } = p;
    Plan {
        status_changed: st != current,
        status: st,
        actions,
        requeue,
        events,
    }
}

impl Planner<'_> {
    fn attempt(&self) -> i64 {
        self.st.attempt.unwrap_or(1).max(1)
    }

    fn pod_name(&self) -> String {
        pod_name(self.s.name, self.attempt())
    }

    /// Set a condition; `lastTransitionTime` moves only when `status` does.
    fn cond(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) {
        let message = message.into();
        let generation = self.s.generation;
        let conds = self.st.conditions.get_or_insert_with(Vec::new);
        match conds.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(self.now_text.clone());
                }
                c.status = status;
                c.reason = Some(reason.to_owned());
                c.message = Some(message);
                c.observed_generation = Some(generation);
            }
            None => conds.push(Condition {
                type_: type_.to_owned(),
                status,
                reason: Some(reason.to_owned()),
                message: Some(message),
                last_transition_time: Some(self.now_text.clone()),
                observed_generation: Some(generation),
            }),
        }
    }

    /// A condition already True stays as it was said (reason and message:
    /// rewording it would be a status write that tells nobody anything);
    /// only its `observedGeneration` follows the spec.
    fn still_true(&mut self, type_: &str) -> bool {
        let generation = self.s.generation;
        match self
            .st
            .conditions
            .as_mut()
            .and_then(|cs| cs.iter_mut().find(|c| c.type_ == type_))
        {
            Some(c) if c.status == ConditionStatus::True => {
                c.observed_generation = Some(generation);
                true
            }
            _ => false,
        }
    }

    fn cond_reason(&self, type_: &str) -> Option<&str> {
        self.st
            .conditions
            .as_deref()
            .and_then(|c| c.iter().find(|c| c.type_ == type_))
            .and_then(|c| c.reason.as_deref())
    }

    fn cond_status(&self, type_: &str) -> Option<&ConditionStatus> {
        self.st
            .conditions
            .as_deref()
            .and_then(|c| c.iter().find(|c| c.type_ == type_))
            .map(|c| &c.status)
    }

    fn happened(
        &mut self,
        warning: bool,
        reason: &'static str,
        action: &'static str,
        note: String,
    ) {
        self.events.push(Happened {
            warning,
            reason,
            action,
            note,
        });
    }

    fn requeue_in(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    fn delete_pod(&mut self, name: &str) {
        let action = Action::DeletePod {
            name: name.to_owned(),
        };
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    fn delete_current_pod(&mut self) {
        if let Some(pod) = &self.obs.pod
            && !pod.deleting
        {
            let name = pod.name.clone();
            self.delete_pod(&name);
        }
    }

    fn clear_desired(&mut self) {
        if self.s.desired.is_some() && !self.actions.contains(&Action::ClearDesiredPhase) {
            self.actions.push(Action::ClearDesiredPhase);
        }
    }

    fn start_stopping(&mut self, reason: StoppedReason) {
        self.st.phase = Some(Phase::Stopping);
        self.st.stopped_reason = Some(reason);
        self.delete_current_pod();
        self.cond(
            READY,
            ConditionStatus::False,
            "Stopping",
            "the session is stopping",
        );
        self.requeue_in(Duration::ZERO);
    }

    fn new_session(&mut self) {
        self.st.phase = Some(Phase::Pending);
        self.st.attempt = Some(self.attempt());
        self.cond(
            POD_CREATED,
            ConditionStatus::False,
            "Pending",
            "waiting to create the runner pod",
        );
        self.cond(
            READY,
            ConditionStatus::False,
            "Pending",
            "the session has not started",
        );
        self.requeue_in(Duration::ZERO);
    }

    fn pending(&mut self) {
        if self.s.desired == Some(Desired::Stopped) {
            self.clear_desired();
            self.start_stopping(StoppedReason::User);
            return;
        }
        // Asked to run, and running is what Pending leads to: acted on.
        self.clear_desired();
        if self.obs.foreign_service {
            self.happened(
                true,
                "ServiceNameTaken",
                "CreateService",
                format!(
                    "Service {} exists and was not made by the reconciler; it is left alone and never used",
                    service_name(self.s.name)
                ),
            );
        } else if !self.obs.service {
            self.actions.push(Action::CreateService);
        }
        let name = self.pod_name();
        if self.obs.name_taken {
            // Someone else's pod holds the runner's name: neither adopted
            // (it would get notices and count as the runner) nor a failed
            // attempt (that would burn the retries); wait for it to go.
            if self.cond_reason(POD_CREATED) != Some("NameTaken") {
                self.happened(
                    true,
                    "PodNameTaken",
                    "CreatePod",
                    format!(
                        "pod {name} exists and was not made by the reconciler; delete it to start the runner"
                    ),
                );
            }
            self.cond(
                POD_CREATED,
                ConditionStatus::False,
                "NameTaken",
                format!("pod {name} exists and was not made by the reconciler; delete it to start the runner"),
            );
            self.requeue_in(Duration::from_secs(30));
            return;
        }
        match &self.obs.pod {
            Some(pod) if pod.deleting => {
                // The name is taken by a pod still terminating.
                self.requeue_in(Duration::from_secs(2));
                return;
            }
            Some(_) => {}
            None => self.actions.push(Action::CreatePod {
                name: name.clone(),
                attempt: self.attempt(),
            }),
        }
        self.st.phase = Some(Phase::Creating);
        let (attempt, max) = (self.attempt(), self.cfg.max_attempts.max(1));
        self.happened(
            false,
            "PodCreated",
            "CreatePod",
            format!("runner pod {name} created (attempt {attempt} of {max})"),
        );
        self.cond(
            POD_CREATED,
            ConditionStatus::True,
            "Created",
            format!("runner pod {name} created"),
        );
        self.cond(
            RUNNER_STARTED,
            ConditionStatus::False,
            "Starting",
            "waiting for the runner container",
        );
        // No timer while the pod starts: its watch events wake this session
        // (and the controller's resync is the safety net). A 60 s recheck
        // here made the reconciles of a burst grow with the square of its
        // size: every session queued behind the request rate was rechecked
        // each minute until the last one was created.
    }

    /// Why the current attempt has failed, if it has.
    fn attempt_failure(&self) -> Option<(String, String)> {
        let Some(pod) = &self.obs.pod else {
            return Some(("PodDeleted".into(), "the runner pod is gone".into()));
        };
        if pod.deleting {
            return Some((
                "PodDeleted".into(),
                format!("runner pod {} is being deleted", pod.name),
            ));
        }
        if let RunnerState::Terminated { exit_code, reason } = &pod.runner
            && *exit_code != 0
        {
            let why = if reason.is_empty() {
                "Error"
            } else {
                reason.as_str()
            };
            let kind = if why == "OOMKilled" {
                "OOMKilled"
            } else {
                "RunnerFailed"
            };
            return Some((
                kind.into(),
                format!("runner container exited with code {exit_code} ({why})"),
            ));
        }
        if pod.reason.as_deref() == Some("Evicted") {
            return Some((
                "Evicted".into(),
                format!("runner pod {} was evicted", pod.name),
            ));
        }
        if pod.phase == PodPhase::Failed
            && !matches!(pod.runner, RunnerState::Terminated { exit_code: 0, .. })
        {
            let why = pod.reason.clone().unwrap_or_else(|| "Failed".into());
            return Some((
                "PodFailed".into(),
                format!("runner pod {} failed ({why})", pod.name),
            ));
        }
        if let RunnerState::Waiting { reason } = &pod.runner
            && matches!(
                reason.as_str(),
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
            )
        {
            return Some((
                reason.clone(),
                format!("runner container cannot start ({reason})"),
            ));
        }
        None
    }

    /// What the status says one runner has applies to that runner only:
    /// once it is gone, nothing is reconciled until the next one is told.
    fn forget_runner(&mut self, why: &str) {
        self.st.reconciled_repos = None;
        self.st.reconciled_workflow = None;
        for type_ in [REPOS_RECONCILED, WORKFLOW_RECONCILED] {
            if self.cond_status(type_).is_some() {
                self.cond(type_, ConditionStatus::False, "WaitingForRunner", why);
            }
        }
    }

    /// A failed attempt: retry on a fresh pod, or stop at the cap.
    fn fail_attempt(&mut self, reason: &str, message: &str) {
        self.delete_current_pod();
        let attempt = self.attempt();
        let max = self.cfg.max_attempts.max(1);
        self.forget_runner(&format!("the runner of attempt {attempt} is gone"));
        self.cond(RUNNER_STARTED, ConditionStatus::False, reason, message);
        self.happened(
            true,
            "AttemptFailed",
            "Observe",
            format!("attempt {attempt} of {max} failed ({reason}): {message}"),
        );
        if attempt < max {
            // Running -> Pending is legal only with a higher attempt in the same write.
            self.st.attempt = Some(attempt + 1);
            self.st.phase = Some(Phase::Pending);
            self.happened(
                false,
                "Retrying",
                "Retry",
                format!(
                    "starting attempt {} of {max} on a new runner pod",
                    attempt + 1
                ),
            );
            // startTime stays: it says a runner of this session started
            // before (the runner contract's IS_RESUME), until the next
            // runner's start replaces it.
            self.cond(
                POD_CREATED,
                ConditionStatus::False,
                "Retrying",
                format!("attempt {attempt} of {max} failed: {message}"),
            );
            self.cond(
                READY,
                ConditionStatus::False,
                reason,
                format!("retrying after: {message}"),
            );
            self.requeue_in(Duration::ZERO);
        } else {
            self.st.phase = Some(Phase::Failed);
            self.st.completion_time = Some(self.now_text.clone());
            self.happened(
                true,
                "RetriesExhausted",
                "Retry",
                format!("attempt {attempt} of {max} failed; no runner will be started again"),
            );
            self.cond(
                RETRIES_EXHAUSTED,
                ConditionStatus::True,
                reason,
                format!("attempt {attempt} of {max} failed: {message}"),
            );
            self.cond(READY, ConditionStatus::False, reason, message.to_owned());
        }
    }

    fn enter_running(&mut self) {
        self.st.phase = Some(Phase::Running);
        self.st.start_time = Some(self.now_text.clone());
        let pod = self
            .obs
            .pod
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let attempt = self.attempt();
        self.happened(
            false,
            "RunnerStarted",
            "Observe",
            format!("runner pod {pod} is running (attempt {attempt})"),
        );
        self.cond(
            RUNNER_STARTED,
            ConditionStatus::True,
            "RunnerStarted",
            "the runner container is running",
        );
        // The runner cloned the repos the pod was built with.
        self.st.reconciled_repos = self
            .obs
            .pod
            .as_ref()
            .map(|p| p.repos.iter().map(reconciled_repo).collect());
        self.st.reconciled_workflow = None;
        self.requeue_in(Duration::ZERO);
    }

    fn creating(&mut self) {
        if self.s.desired == Some(Desired::Stopped) {
            self.clear_desired();
            self.start_stopping(StoppedReason::User);
            return;
        }
        self.clear_desired();
        if let Some((reason, message)) = self.attempt_failure() {
            self.fail_attempt(&reason, &message);
            return;
        }
        match self.obs.pod.as_ref().map(|p| &p.runner) {
            // It finished before we saw it run: record Running first (RunnerStarted and
            // its notices belong to every attempt), then Completed.
            Some(RunnerState::Terminated { exit_code: 0, .. })
            | Some(RunnerState::Running { ready: true }) => self.enter_running(),
            // Woken by the pod's watch events, as in `pending`.
            _ => {}
        }
    }

    fn running(&mut self) {
        if self.s.desired == Some(Desired::Stopped) {
            self.clear_desired();
            self.start_stopping(StoppedReason::User);
            return;
        }
        self.clear_desired();
        if let Some((reason, message)) = self.attempt_failure() {
            self.fail_attempt(&reason, &message);
            return;
        }
        if matches!(
            self.obs.pod.as_ref().map(|p| &p.runner),
            Some(RunnerState::Terminated { exit_code: 0, .. })
        ) {
            self.st.phase = Some(Phase::Completed);
            self.st.completion_time = Some(self.now_text.clone());
            self.happened(
                false,
                "Completed",
                "Observe",
                "the runner finished successfully (exit code 0)".to_owned(),
            );
            self.cond(
                READY,
                ConditionStatus::False,
                "Completed",
                "the runner finished successfully",
            );
            // Graceful deletion lets a sidecar finish its last sync, then frees the node.
            self.delete_current_pod();
            return;
        }
        if self.timed_out() || self.inactive() {
            return;
        }
        self.reconcile_repos();
        self.reconcile_workflow();
        self.readiness();
    }

    fn started_at(&self) -> Option<Timestamp> {
        self.st.start_time.as_deref().and_then(|t| t.parse().ok())
    }

    fn timed_out(&mut self) -> bool {
        let spec = self.s.spec;
        let Some(limit) = spec.timeout_seconds.filter(|t| *t > 0) else {
            return false;
        };
        if spec.is_interactive() {
            return false;
        }
        let Some(started) = self.started_at() else {
            return false;
        };
        let deadline = started
            .saturating_add(SignedDuration::from_secs(limit))
            .unwrap_or(started);
        if self.now >= deadline {
            self.st.phase = Some(Phase::Failed);
            self.st.completion_time = Some(self.now_text.clone());
            self.happened(
                true,
                "Timeout",
                "Stop",
                format!("ran longer than timeoutSeconds ({limit})"),
            );
            self.cond(
                READY,
                ConditionStatus::False,
                "Timeout",
                format!("ran longer than timeoutSeconds ({limit})"),
            );
            self.delete_current_pod();
            return true;
        }
        self.requeue_in(self.now.duration_until(deadline).unsigned_abs());
        false
    }

    fn inactive(&mut self) -> bool {
        let Some(limit) = self.s.spec.inactivity_timeout_seconds.filter(|t| *t > 0) else {
            return false;
        };
        let last = self
            .st
            .last_activity_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .or_else(|| self.started_at());
        let Some(last) = last else {
            return false;
        };
        let deadline = last
            .saturating_add(SignedDuration::from_secs(limit))
            .unwrap_or(last);
        if self.now >= deadline {
            self.start_stopping(StoppedReason::Inactivity);
            return true;
        }
        self.requeue_in(self.now.duration_until(deadline).unsigned_abs());
        false
    }

    fn reconcile_repos(&mut self) {
        let desired = desired_repos(self.s.spec);
        if self.st.reconciled_repos.as_deref().unwrap_or_default() == desired.as_slice() {
            if !self.still_true(REPOS_RECONCILED) {
                self.cond(
                    REPOS_RECONCILED,
                    ConditionStatus::True,
                    "Reconciled",
                    "the runner has the spec's repos",
                );
            }
            return;
        }
        match self.obs.for_current(&self.obs.repos_notice) {
            Some(n) if n.target == desired && n.ok => {
                let note = format!("the runner applied {} repo(s)", desired.len());
                self.happened(false, "ReposApplied", "NotifyRunner", note);
                self.st.reconciled_repos = Some(desired);
                self.cond(
                    REPOS_RECONCILED,
                    ConditionStatus::True,
                    "Applied",
                    "the runner applied the spec's repos",
                );
            }
            Some(n) if n.target == desired => {
                if n.fresh {
                    let note = format!("telling the runner its repos failed: {}", n.message);
                    self.happened(true, "ReposNoticeFailed", "NotifyRunner", note);
                }
                self.cond(
                    REPOS_RECONCILED,
                    ConditionStatus::False,
                    "UpdateFailed",
                    n.message.clone(),
                );
                self.retry_notice(n.at, n.failures, Action::NotifyRepos(desired));
            }
            _ => {
                self.cond(
                    REPOS_RECONCILED,
                    ConditionStatus::False,
                    "Applying",
                    "telling the runner about the spec's repos",
                );
                self.actions.push(Action::NotifyRepos(desired));
            }
        }
    }

    fn reconcile_workflow(&mut self) {
        let desired = desired_workflow(self.s.spec);
        if self.st.reconciled_workflow == desired {
            if !self.still_true(WORKFLOW_RECONCILED) {
                let reason = if desired.is_some() {
                    "Reconciled"
                } else {
                    "NoWorkflow"
                };
                self.cond(
                    WORKFLOW_RECONCILED,
                    ConditionStatus::True,
                    reason,
                    "the runner has the spec's workflow",
                );
            }
            return;
        }
        // Only a started runner can be told (the old operator told a pod
        // that did not exist yet, swallowed the error and never retried).
        if self.cond_status(RUNNER_STARTED) != Some(&ConditionStatus::True) {
            self.cond(
                WORKFLOW_RECONCILED,
                ConditionStatus::False,
                "WaitingForRunner",
                "the runner has not started",
            );
            return;
        }
        match self.obs.for_current(&self.obs.workflow_notice) {
            Some(n) if n.target == desired && n.ok => {
                let note = match &desired {
                    Some(w) => format!(
                        "the runner loaded workflow {} (branch {}, path {})",
                        w.git_url.as_deref().unwrap_or_default(),
                        w.branch.as_deref().unwrap_or("main"),
                        w.path.as_deref().unwrap_or("/"),
                    ),
                    None => "the runner unloaded its workflow".to_owned(),
                };
                self.happened(false, "WorkflowApplied", "NotifyRunner", note);
                self.st.reconciled_workflow = desired;
                self.cond(
                    WORKFLOW_RECONCILED,
                    ConditionStatus::True,
                    "Applied",
                    "the runner loaded the workflow",
                );
            }
            Some(n) if n.target == desired => {
                if n.fresh {
                    let note = format!("telling the runner its workflow failed: {}", n.message);
                    self.happened(true, "WorkflowNoticeFailed", "NotifyRunner", note);
                }
                self.cond(
                    WORKFLOW_RECONCILED,
                    ConditionStatus::False,
                    "UpdateFailed",
                    n.message.clone(),
                );
                self.retry_notice(n.at, n.failures, Action::NotifyWorkflow(desired));
            }
            _ => {
                self.cond(
                    WORKFLOW_RECONCILED,
                    ConditionStatus::False,
                    "Applying",
                    "telling the runner about the workflow",
                );
                self.actions.push(Action::NotifyWorkflow(desired));
            }
        }
    }

    fn retry_notice(&mut self, at: Timestamp, failures: u32, action: Action) {
        let due = at
            .saturating_add(
                SignedDuration::try_from(notice_backoff(failures)).unwrap_or(SignedDuration::ZERO),
            )
            .unwrap_or(at);
        if self.now >= due {
            self.actions.push(action);
        } else {
            self.requeue_in(self.now.duration_until(due).unsigned_abs());
        }
    }

    /// Ready, and `observedGeneration`, only once repos and workflow match this generation.
    fn readiness(&mut self) {
        let reconciled = self.cond_status(REPOS_RECONCILED) == Some(&ConditionStatus::True)
            && self.cond_status(WORKFLOW_RECONCILED) == Some(&ConditionStatus::True);
        if reconciled {
            self.st.observed_generation = Some(self.s.generation);
            self.cond(
                READY,
                ConditionStatus::True,
                "Running",
                "the runner is up with the current spec",
            );
        } else {
            self.cond(
                READY,
                ConditionStatus::False,
                "Reconciling",
                "applying the current spec to the runner",
            );
        }
    }

    fn stopping(&mut self) {
        self.clear_desired();
        match &self.obs.pod {
            Some(pod) => {
                if !pod.deleting {
                    let name = pod.name.clone();
                    self.delete_pod(&name);
                }
                self.requeue_in(Duration::from_secs(2));
            }
            None => {
                self.st.phase = Some(Phase::Stopped);
                let why = self
                    .st
                    .stopped_reason
                    .get_or_insert(StoppedReason::User)
                    .clone();
                self.happened(
                    false,
                    "Stopped",
                    "Stop",
                    format!("the session is stopped (reason: {})", why.as_str()),
                );
                self.st.completion_time = Some(self.now_text.clone());
                self.cond(
                    READY,
                    ConditionStatus::False,
                    "Stopped",
                    "the session is stopped",
                );
            }
        }
    }

    fn finished(&mut self) {
        if self.st.phase == Some(Phase::Error) {
            // A legacy name that reached v1alpha2 storage.
            self.st.phase = Some(Phase::Failed);
        }
        // Nothing runs in a finished session; RetriesExhausted means nothing is re-created.
        let pod_left = self.obs.pod.is_some();
        self.delete_current_pod();
        match self.s.desired {
            // A restart reuses attempt 1 and so the pod name: wait until the
            // previous run's pod is gone (the annotation stays until then).
            Some(Desired::Running) if pod_left => self.requeue_in(Duration::from_secs(2)),
            Some(Desired::Running) => {
                self.clear_desired();
                self.restart();
            }
            Some(Desired::Stopped) => self.clear_desired(),
            None => {}
        }
    }

    fn restart(&mut self) {
        self.happened(
            false,
            "Restarted",
            "Restart",
            "restarted by desired-phase Running: attempt 1 on a new runner pod".to_owned(),
        );
        // Restarts after the retries ran out are counted: the webhook lets
        // tenants make `--max-restarts` of them (V26).
        if self.cond_status(RETRIES_EXHAUSTED) == Some(&ConditionStatus::True) {
            self.st.restarts = Some(self.st.restarts.unwrap_or(0) + 1);
        }
        self.st.phase = Some(Phase::Pending);
        self.st.attempt = Some(1);
        // startTime stays (a runner ran before: IS_RESUME), as the
        // platform's operator keeps it over a restart.
        self.st.completion_time = None;
        self.st.stopped_reason = None;
        self.forget_runner("restarted by desired-phase Running");
        self.cond(
            RETRIES_EXHAUSTED,
            ConditionStatus::False,
            "Restarted",
            "restarted by desired-phase Running",
        );
        self.cond(
            POD_CREATED,
            ConditionStatus::False,
            "Pending",
            "waiting to create the runner pod",
        );
        self.cond(
            RUNNER_STARTED,
            ConditionStatus::False,
            "Restarted",
            "restarted by desired-phase Running",
        );
        self.cond(
            READY,
            ConditionStatus::False,
            "Pending",
            "the session has not started",
        );
        self.requeue_in(Duration::ZERO);
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
