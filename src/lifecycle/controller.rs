//! The kube-runtime driver around the planner.
//!
//! One reconcile: observe (the session's runner pods and Service) → plan →
//! act (create/delete, idempotently) → tell the runner about changes and
//! re-plan with the answers → write status by server-side apply with the
//! read `resourceVersion` as precondition (a conflict re-reads and retries)
//! → clear the desired-phase annotation only if it still says what we acted on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller, Error as ControllerError};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::KIND;
use crate::api::annotations::DESIRED_PHASE;
use crate::api::resource::AgenticSession;
use crate::api::status::{ReconciledRepo, ReconciledWorkflow};
use crate::api::v1alpha2::{API_VERSION, SessionStatus};
use crate::server::metrics::{Metrics, PhaseLabel, ResultLabel};

use super::notice::{NoticeBody, RunnerNotifier, RunnerRef};
use super::plan::{
    self, Action, Desired, Happened, Notice, Observed, PlanConfig, SessionView, service_name,
};
use super::world::{self, LABEL_MANAGED_BY, LABEL_SESSION, MANAGED_BY, RunnerConfig};

pub const FIELD_MANAGER: &str = "agentic-reconciler";
const CONFLICT_RETRIES: usize = 3;
/// Look at every session at least this often, events or not.
const RESYNC: Duration = Duration::from_secs(300);
/// Default bound on one whole reconcile (all its API calls, notices and
/// conflict retries); past it the attempt is dropped and requeued with
/// backoff. Every step is idempotent, so an abandoned attempt is safe.
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("session has no {0}")]
    Missing(&'static str),
    #[error("status write conflicted {0} times in a row")]
    Conflicts(usize),
    #[error("reconcile did not finish within {0:?}")]
    Timeout(Duration),
}

/// What one session's current runner pod has been told. Keyed by the
/// session's uid and bound to the pod's uid, so a retry, a restart or a
/// re-created session starts untold; dropped when the runner or the session
/// goes. After a controller restart this memory is empty, and the status
/// (`reconciledWorkflow`/`reconciledRepos`, reset with every new attempt)
/// says what this attempt's runner already has.
#[derive(Default)]
struct RunnerNotices {
    runner: String,
    workflow: Option<Notice<Option<ReconciledWorkflow>>>,
    repos: Option<Notice<Vec<ReconciledRepo>>>,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub runner: RunnerConfig,
    pub plan: PlanConfig,
    pub notifier: Arc<dyn RunnerNotifier>,
    pub metrics: Arc<Metrics>,
    pub clock: fn() -> Timestamp,
    pub reconcile_timeout: Duration,
    /// One recorder for the controller: it folds repeats of an event into
    /// a series (count) instead of a new Event per reconcile.
    recorder: Recorder,
    notices: Mutex<HashMap<String, RunnerNotices>>,
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        runner: RunnerConfig,
        plan: PlanConfig,
        notifier: Arc<dyn RunnerNotifier>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), reporter(None));
        Arc::new(Context {
            recorder,
            client,
            runner,
            plan,
            notifier,
            metrics,
            clock: Timestamp::now,
            reconcile_timeout: DEFAULT_RECONCILE_TIMEOUT,
            notices: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    pub fn with_clock(self: Arc<Self>, clock: fn() -> Timestamp) -> Arc<Self> {
        self.edit(|ctx| ctx.clock = clock)
    }

    pub fn with_reconcile_timeout(self: Arc<Self>, timeout: Duration) -> Arc<Self> {
        self.edit(|ctx| ctx.reconcile_timeout = timeout)
    }

    /// Name this replica in the Events it records (`reportingInstance`).
    pub fn with_instance(self: Arc<Self>, instance: String) -> Arc<Self> {
        self.edit(|ctx| ctx.recorder = Recorder::new(ctx.client.clone(), reporter(Some(instance))))
    }

    /// Settings are applied before the context is shared; once shared they
    /// are fixed.
    fn edit(self: Arc<Self>, f: impl FnOnce(&mut Context)) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut ctx) => {
                f(&mut ctx);
                Arc::new(ctx)
            }
            Err(shared) => shared,
        }
    }
}

fn reporter(instance: Option<String>) -> Reporter {
    Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance,
    }
}

/// Publish what the plan says happened. Events are for people: a failure
/// is logged and counted, never fails the reconcile.
async fn record_events(ctx: &Context, session: &AgenticSession, events: &[Happened]) {
    if events.is_empty() {
        return;
    }
    let mut regarding = session.object_ref(&());
    // Without the resourceVersion, repeats match and are folded into a series.
    regarding.resource_version = None;
    for e in events {
        let event = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.to_owned(),
            note: Some(e.note.chars().take(1024).collect()),
            action: e.action.to_owned(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &regarding).await {
            ctx.metrics.event_errors.inc();
            tracing::warn!(session = %session.name_any(), namespace = ?session.namespace(), reason = e.reason, %error, "event not recorded");
        }
    }
}

fn is_status(e: &kube::Error, check: fn(&kube::core::Status) -> bool) -> bool {
    matches!(e, kube::Error::Api(s) if check(s))
}

fn key(s: &AgenticSession) -> (String, String) {
    (s.namespace().unwrap_or_default(), s.name_any())
}

/// The session's identity across re-creation under the same name.
fn session_key(s: &AgenticSession) -> String {
    match &s.metadata.uid {
        Some(uid) => uid.clone(),
        None => format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
    }
}

impl Context {
    /// Forget what belongs to sessions no longer in the cache (deleted
    /// sessions are never reconciled again, so nothing else would).
    pub fn retain_sessions(&self, sessions: &[Arc<AgenticSession>]) {
        let uids: std::collections::HashSet<String> =
            sessions.iter().map(|s| session_key(s)).collect();
        let names: std::collections::HashSet<(String, String)> =
            sessions.iter().map(|s| key(s)).collect();
        if let Ok(mut map) = self.notices.lock() {
            map.retain(|k, _| uids.contains(k));
            self.metrics.notice_entries.set(gauge_value(map.len()));
        }
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|k, _| names.contains(k));
        }
    }

    /// Runners whose notices are remembered (tests and metrics).
    pub fn notice_entries(&self) -> usize {
        self.notices.lock().map(|m| m.len()).unwrap_or(0)
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reconcile one session (kube-runtime calls this).
pub async fn reconcile(session: Arc<AgenticSession>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = tokio::time::timeout(
        ctx.reconcile_timeout,
        reconcile_with_retry(session.clone(), &ctx),
    )
    .await
    .unwrap_or(Err(Error::Timeout(ctx.reconcile_timeout)));
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let label = ResultLabel {
        result: if result.is_ok() { "success" } else { "error" }.to_owned(),
    };
    ctx.metrics.reconciles.get_or_create(&label).inc();
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&key(&session));
    }
    result
}

/// Requeue failed reconciles with exponential backoff per session.
pub fn error_policy(session: Arc<AgenticSession>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.reconcile_errors.inc();
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key(&session)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay =
        Duration::from_millis(500u64.saturating_mul(1 << n.min(10))).min(Duration::from_secs(300));
    tracing::warn!(session = %session.name_any(), namespace = ?session.namespace(), %error, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

async fn reconcile_with_retry(
    session: Arc<AgenticSession>,
    ctx: &Context,
) -> Result<Requeue, Error> {
    let ns = session.namespace().ok_or(Error::Missing("namespace"))?;
    let name = session.name_any();
    let api: Api<AgenticSession> = Api::namespaced(ctx.client.clone(), &ns);
    let mut current = (*session).clone();
    for _ in 0..CONFLICT_RETRIES {
        match reconcile_once(&current, ctx).await {
            Err(Error::Kube(e)) if is_status(&e, kube::core::Status::is_conflict) => {
                // Someone wrote the session since we read it: read again, re-plan.
                match api.get_opt(&name).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok(Requeue::await_change()),
                }
            }
            other => return other,
        }
    }
    Err(Error::Conflicts(CONFLICT_RETRIES))
}

fn controlled_by(pod: &Pod, uid: Option<&str>) -> bool {
    let Some(uid) = uid else { return true };
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

async fn observe(session: &AgenticSession, ctx: &Context) -> Result<Observed, Error> {
    let ns = session.namespace().ok_or(Error::Missing("namespace"))?;
    let name = session.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let attempt = current_attempt(session);
    let listed = pods
        .list(&ListParams::default().labels(&format!("{LABEL_SESSION}={name}")))
        .await?;
    let uid = session.metadata.uid.as_deref();
    let mut observed = Observed {
        service: services.get_opt(&service_name(&name)).await?.is_some(),
        ..Observed::default()
    };
    for pod in listed.items.iter().filter(|p| controlled_by(p, uid)) {
        if world::pod_attempt(pod) == Some(attempt) {
            observed.pod = Some(world::pod_view(pod));
        } else if pod.metadata.deletion_timestamp.is_none() {
            observed.stale_pods.push(pod.name_any());
        }
    }
    if let Ok(mut map) = ctx.notices.lock() {
        let key = session_key(session);
        match (&observed.pod, map.get(&key)) {
            (Some(pod), Some(told)) if told.runner == pod.uid => {
                observed.workflow_notice = told.workflow.clone();
                observed.repos_notice = told.repos.clone();
            }
            // Told a runner that is gone (or not current): forget it.
            (_, Some(_)) => {
                map.remove(&key);
                ctx.metrics.notice_entries.set(gauge_value(map.len()));
            }
            (_, None) => {}
        }
    }
    Ok(observed)
}

/// The attempt whose runner is current (status starts counting at 1).
fn current_attempt(session: &AgenticSession) -> i64 {
    session
        .status
        .as_ref()
        .and_then(|s| s.attempt)
        .unwrap_or(1)
        .max(1)
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

/// Only the fields the reconciler owns; the runner writes the others
/// (`lastActivityTime`, `sdkSessionId`, `sdkRestartCount`) and a forced
/// apply of stale copies would undo its writes.
fn owned_status(st: &SessionStatus) -> SessionStatus {
    SessionStatus {
        last_activity_time: None,
        sdk_session_id: None,
        sdk_restart_count: None,
        ..st.clone()
    }
}

async fn reconcile_once(session: &AgenticSession, ctx: &Context) -> Result<Requeue, Error> {
    if session.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove pod and service.
        return Ok(Requeue::await_change());
    }
    let ns = session.namespace().ok_or(Error::Missing("namespace"))?;
    let name = session.name_any();
    let desired_text = session.annotations().get(DESIRED_PHASE).cloned();
    let observed = observe(session, ctx).await?;
    // Notices planned now go to this pod; their answers are bound to it.
    let runner_uid = observed.pod.as_ref().map(|p| p.uid.clone());
    let now = (ctx.clock)();
    let view = SessionView {
        name: &name,
        generation: session.metadata.generation.unwrap_or(0),
        desired: Desired::parse(desired_text.as_deref()),
        spec: &session.spec,
        status: session.status.as_ref(),
    };
    let mut planned = plan::plan(&view, &observed, now, &ctx.plan);

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let mut notices = Vec::new();
    let mut clear_desired = false;
    for action in &planned.actions {
        match action {
            Action::CreateService => match services
                .create(&PostParams::default(), &world::runner_service(session))
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, kube::core::Status::is_already_exists) => {}
                Err(e) => return Err(e.into()),
            },
            Action::CreatePod { attempt, .. } => {
                let pod = world::runner_pod(session, *attempt, &ctx.runner);
                match pods.create(&PostParams::default(), &pod).await {
                    Ok(_) => {
                        tracing::info!(session = %name, namespace = %ns, attempt, "runner pod created")
                    }
                    // Created by an earlier reconcile whose status write was lost.
                    Err(e) if is_status(&e, kube::core::Status::is_already_exists) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Action::DeletePod { name: pod } => {
                match pods.delete(pod, &DeleteParams::default()).await {
                    Ok(_) => {
                        tracing::info!(session = %name, namespace = %ns, pod = %pod, "runner pod deleted")
                    }
                    Err(e) if is_status(&e, kube::core::Status::is_not_found) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Action::NotifyWorkflow(w) => notices.push(NoticeBody::Workflow(w.clone())),
            Action::NotifyRepos(r) => notices.push(NoticeBody::Repos { repos: r.clone() }),
            Action::ClearDesiredPhase => clear_desired = true,
        }
    }

    let told_workflow = notices.iter().any(|n| matches!(n, NoticeBody::Workflow(_)));
    let told_repos = notices
        .iter()
        .any(|n| matches!(n, NoticeBody::Repos { .. }));
    if let (false, Some(runner_uid)) = (notices.is_empty(), runner_uid) {
        for body in notices {
            let runner = RunnerRef {
                namespace: &ns,
                session: &name,
                attempt: current_attempt(session),
            };
            let result = ctx.notifier.notify(runner, body.clone()).await;
            if let Err(e) = &result {
                tracing::warn!(session = %name, namespace = %ns, error = %e, path = body.path(), "runner notice failed");
            }
            let at = (ctx.clock)();
            if let Ok(mut map) = ctx.notices.lock() {
                let told = map.entry(session_key(session)).or_default();
                if told.runner != runner_uid {
                    *told = RunnerNotices {
                        runner: runner_uid.clone(),
                        ..RunnerNotices::default()
                    };
                }
                match body {
                    NoticeBody::Workflow(w) => {
                        record(&mut told.workflow, &runner_uid, w, &result, at)
                    }
                    NoticeBody::Repos { repos } => {
                        record(&mut told.repos, &runner_uid, repos, &result, at)
                    }
                }
                ctx.metrics.notice_entries.set(gauge_value(map.len()));
            }
        }
        // The answers are part of the world now, and news for the planner.
        let mut observed = observe(session, ctx).await?;
        for n in observed.workflow_notice.iter_mut() {
            n.fresh = told_workflow;
        }
        for n in observed.repos_notice.iter_mut() {
            n.fresh = told_repos;
        }
        let replanned = plan::plan(&view, &observed, now, &ctx.plan);
        planned.status = replanned.status;
        planned.status_changed = replanned.status_changed;
        planned.events = replanned.events;
        planned.requeue = match (planned.requeue, replanned.requeue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    if planned.status_changed {
        let api: Api<AgenticSession> = Api::namespaced(ctx.client.clone(), &ns);
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": ns, "resourceVersion": session.metadata.resource_version},
            "status": owned_status(&planned.status),
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        tracing::info!(
            session = %name,
            namespace = %ns,
            phase = ?planned.status.phase.as_ref().map(|p| p.as_str()),
            attempt = ?planned.status.attempt,
            "status written"
        );
    }

    record_events(ctx, session, &planned.events).await;

    if clear_desired && let Some(value) = desired_text {
        // Clear only what we acted on: a newer request makes the test fail.
        let api: Api<AgenticSession> = Api::namespaced(ctx.client.clone(), &ns);
        let pointer = format!(
            "/metadata/annotations/{}",
            DESIRED_PHASE.replace('~', "~0").replace('/', "~1")
        );
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": pointer, "value": value},
            {"op": "remove", "path": pointer},
        ]))?;
        match api
            .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => {}
            Err(e)
                if is_status(&e, kube::core::Status::is_invalid)
                    || is_status(&e, kube::core::Status::is_not_found) =>
            {
                return Ok(Requeue::requeue(Duration::ZERO));
            }
            Err(e) => return Err(e.into()),
        }
    }

    Ok(match planned.requeue {
        Some(d) => Requeue::requeue(d.min(RESYNC)),
        None => Requeue::requeue(RESYNC),
    })
}

/// Sessions by phase, from the controller's cache.
pub fn export_phases(metrics: &Metrics, sessions: &[Arc<AgenticSession>]) {
    let mut counts: HashMap<String, i64> = crate::api::status::Phase::V1ALPHA2
        .iter()
        .map(|p| ((*p).to_owned(), 0))
        .collect();
    for s in sessions {
        let phase = s
            .status
            .as_ref()
            .and_then(|st| st.phase.as_ref())
            .map_or("None".to_owned(), |p| p.as_str().to_owned());
        *counts.entry(phase).or_insert(0) += 1;
    }
    for (phase, n) in counts {
        metrics.sessions.get_or_create(&PhaseLabel { phase }).set(n);
    }
}

/// Scope of the controller's watches.
fn apis<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Run the controller until `stop` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    namespace: Option<String>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let controller = Controller::new(
        apis::<AgenticSession>(&client, ns),
        watcher::Config::default(),
    )
    .owns(apis::<Pod>(&client, ns), owned.clone())
    .owns(apis::<Service>(&client, ns), owned)
    .graceful_shutdown_on(stop);
    let store = controller.store();
    let housekeeping = ctx.clone();
    let exporter = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let sessions = store.state();
            export_phases(&housekeeping.metrics, &sessions);
            housekeeping.retain_sessions(&sessions);
        }
    });
    let metrics = ctx.metrics.clone();
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            match res {
                // The watcher re-lists or re-watches after the trigger backoff.
                Err(ControllerError::QueueError(e)) => {
                    metrics.watch_errors.inc();
                    tracing::warn!(error = %e, "watch failed; retrying with backoff");
                }
                // Reconcile failures are logged by error_policy.
                Err(e) => tracing::debug!(error = %e, "controller event"),
                Ok(_) => {}
            }
            async {}
        })
        .await;
    exporter.abort();
}
