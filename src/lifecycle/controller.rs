//! The kube-runtime driver around the planner.
//!
//! One reconcile: observe (the session's runner pods and Service, from the
//! controller's own watch caches) → plan → act (create/delete,
//! idempotently, remembered as expectations until the caches show them) →
//! tell the runner about changes and re-plan with the answers → write the
//! status this controller owns with one server-side apply → publish the
//! Events → clear the desired-phase annotation only if it still says what
//! we acted on.
//!
//! API calls per session are the writes and nothing else: reads come from
//! caches fed by the same watches that trigger reconciles.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action as Requeue, Controller, Error as ControllerError};
use kube::runtime::events::Recorder;
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::metrics::{Metrics, PhaseLabel};
use crate::api::KIND;
use crate::api::annotations::DESIRED_PHASE;
use crate::api::resource::AgenticSession;
use crate::api::v1alpha2::API_VERSION;
use crate::telemetry::ResultLabel;

use super::cache::{Cache, CacheWriters};
use super::contract::Contract;
use super::events;
use super::mark::Marker;
use super::memory::{Memory, owned_status};
use super::notice::{NoticeBody, RunnerNotifier, RunnerRef};
use super::plan::{self, Action, Desired, Observed, PlanConfig, SessionView, service_name};
use super::world::{self, IngressSources, LABEL_MANAGED_BY, MANAGED_BY, RunnerConfig};

pub const FIELD_MANAGER: &str = "agentic-reconciler";
const CONFLICT_RETRIES: usize = 3;
/// Look at every session at least this often, events or not.
const RESYNC: Duration = Duration::from_secs(300);
/// Default bound on one whole reconcile (all its API calls, notices and
/// conflict retries); past it the attempt is dropped and requeued with
/// backoff. Every step is idempotent, so an abandoned attempt is safe.
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default bound on reconciles in flight. kube-runtime's default is none:
/// 10,000 new sessions meant 10,000 reconciles writing at once, the
/// apiserver throttling them (429, retried) and the controller holding
/// every request in memory.
pub const DEFAULT_CONCURRENCY: u16 = 8;

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
    #[error("the pod and service caches stopped")]
    CacheGone,
    #[error("{0}")]
    Taken(String),
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// How runner pods are made; swapped when the template file changes.
    pub runner: Arc<ArcSwap<RunnerConfig>>,
    pub plan: PlanConfig,
    pub notifier: Arc<dyn RunnerNotifier>,
    pub metrics: Arc<Metrics>,
    pub clock: fn() -> Timestamp,
    pub reconcile_timeout: Duration,
    /// Reconciles in flight at once (each makes at most a few requests).
    pub concurrency: u16,
    recorder: Recorder,
    cache: Cache,
    /// The caches' write halves, until `run_controller` (or a test) takes them.
    writers: Mutex<Option<CacheWriters>>,
    memory: Memory,
    failures: Mutex<HashMap<(String, String), u32>>,
    /// Networks runners may not reach besides the metadata addresses; None:
    /// no egress NetworkPolicy is made.
    egress_denied: Option<Vec<ipnet::IpNet>>,
    /// Who may open a runner's port; None: no ingress NetworkPolicy is made.
    ingress: Option<IngressSources>,
    /// Namespaces whose runner NetworkPolicies this controller keeps
    /// (held across the first apply, so concurrent reconciles in a new
    /// namespace make one request; restored on every change after).
    policies_done: tokio::sync::Mutex<HashSet<String>>,
}

impl Context {
    pub fn new(
        client: Client,
        runner: RunnerConfig,
        plan: PlanConfig,
        notifier: Arc<dyn RunnerNotifier>,
        metrics: Arc<Metrics>,
        marker: Marker,
    ) -> Arc<Self> {
        let (cache, writers) = Cache::new(marker);
        Arc::new(Context {
            recorder: events::recorder(client.clone(), FIELD_MANAGER, None),
            client,
            runner: Arc::new(ArcSwap::from_pointee(runner)),
            plan,
            notifier,
            metrics,
            clock: Timestamp::now,
            reconcile_timeout: DEFAULT_RECONCILE_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            cache,
            writers: Mutex::new(Some(writers)),
            memory: Memory::default(),
            failures: Mutex::new(HashMap::new()),
            egress_denied: None,
            ingress: None,
            policies_done: tokio::sync::Mutex::new(HashSet::new()),
        })
    }

    /// Give each namespace with runners the egress NetworkPolicy
    /// ([`world::runner_egress_policy`]), denying `denied` besides metadata.
    pub fn with_egress_policy(self: Arc<Self>, denied: Vec<ipnet::IpNet>) -> Arc<Self> {
        self.edit(|ctx| ctx.egress_denied = Some(denied))
    }

    /// Give each namespace with runners the ingress NetworkPolicy
    /// ([`world::runner_ingress_policy`]).
    pub fn with_ingress_policy(self: Arc<Self>, from: IngressSources) -> Arc<Self> {
        self.edit(|ctx| ctx.ingress = Some(from))
    }

    pub fn with_clock(self: Arc<Self>, clock: fn() -> Timestamp) -> Arc<Self> {
        self.edit(|ctx| ctx.clock = clock)
    }

    pub fn with_reconcile_timeout(self: Arc<Self>, timeout: Duration) -> Arc<Self> {
        self.edit(|ctx| ctx.reconcile_timeout = timeout)
    }

    pub fn with_concurrency(self: Arc<Self>, concurrency: u16) -> Arc<Self> {
        self.edit(|ctx| ctx.concurrency = concurrency.max(1))
    }

    /// Name this replica in the Events it records (`reportingInstance`).
    pub fn with_instance(self: Arc<Self>, instance: String) -> Arc<Self> {
        self.edit(|ctx| {
            ctx.recorder = events::recorder(ctx.client.clone(), FIELD_MANAGER, Some(instance))
        })
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

    /// The write halves of the pod and service caches (once).
    pub fn take_cache_writers(&self) -> Option<CacheWriters> {
        self.writers.lock().ok().and_then(|mut w| w.take())
    }

    /// Forget what belongs to sessions no longer in the cache (deleted
    /// sessions are never reconciled again, so nothing else would).
    pub fn retain_sessions(&self, sessions: &[Arc<AgenticSession>]) {
        let uids: HashSet<String> = sessions.iter().map(|s| session_key(s)).collect();
        let names: HashSet<(String, String)> = sessions.iter().map(|s| key(s)).collect();
        self.memory.retain(&uids);
        self.cache.sweep();
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|k, _| names.contains(k));
        }
        self.export_memory();
    }

    /// Runners whose notices are remembered (tests and metrics).
    pub fn notice_entries(&self) -> usize {
        self.memory.notice_entries()
    }

    fn export_memory(&self) {
        self.metrics
            .notice_entries
            .set(gauge_value(self.memory.notice_entries()));
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
    ctx.cache.ready().await.map_err(|_| Error::CacheGone)?;
    let ns = session.namespace().ok_or(Error::Missing("namespace"))?;
    let name = session.name_any();
    let api: Api<AgenticSession> = Api::namespaced(ctx.client.clone(), &ns);
    let mut current = (*session).clone();
    for _ in 0..CONFLICT_RETRIES {
        match reconcile_once(&current, ctx).await {
            // Only a JSON patch with a failed precondition can conflict now
            // (status applies are forced); read again and re-plan.
            Err(Error::Kube(e))
                if crate::apiclient::is_api_status(&e, kube::core::Status::is_conflict) =>
            {
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

/// The attempt whose runner is current (status starts counting at 1).
fn current_attempt(session: &AgenticSession) -> i64 {
    session
        .status
        .as_ref()
        .and_then(|s| s.attempt)
        .unwrap_or(1)
        .max(1)
}

fn observe(session: &AgenticSession, ctx: &Context) -> Result<Observed, Error> {
    let ns = session.namespace().ok_or(Error::Missing("namespace"))?;
    let seen = ctx.cache.observe(
        &ns,
        &session.name_any(),
        session.metadata.uid.as_deref(),
        current_attempt(session),
        ctx.plan.max_attempts,
    );
    let mut observed = Observed {
        pod: seen.pod,
        stale_pods: seen.stale_pods,
        service: seen.service,
        name_taken: seen.name_taken,
        foreign_service: seen.foreign_service,
        ..Observed::default()
    };
    let runner = observed.pod.as_ref().map(|p| p.uid.clone());
    ctx.memory
        .told(&session_key(session), runner.as_deref(), &mut observed);
    Ok(observed)
}

/// What an action found.
enum Acted {
    Done,
    /// The name was taken by an object the reconciler did not make.
    Taken,
}

async fn act(
    action: &Action,
    session: &AgenticSession,
    ctx: &Context,
    pods: &Api<Pod>,
    services: &Api<Service>,
) -> Result<Acted, Error> {
    let ns = session.namespace().unwrap_or_default();
    let name = session.name_any();
    let uid = session.metadata.uid.clone().unwrap_or_default();
    let marker = ctx.cache.marker();
    match action {
        Action::CreateService => {
            let mut svc = world::runner_service(session, &ctx.runner.load().contract);
            world::mark_service(&mut svc, &uid, marker);
            let svc_name = service_name(&name);
            match services.create(&PostParams::default(), &svc).await {
                Ok(_) => {}
                Err(e) if is(&e, kube::core::Status::is_already_exists) => {
                    // Ours from an earlier reconcile, or someone else's: look.
                    let found = services.get_opt(&svc_name).await?;
                    if !found.is_some_and(|s| world::service_is_ours(&s, &name, &uid, marker)) {
                        tracing::warn!(session = %name, namespace = %ns, service = %svc_name, "service name taken by an object the reconciler did not make");
                        ctx.cache.foreign_service(&ns, &svc_name);
                        return Ok(Acted::Taken);
                    }
                }
                Err(e) => return Err(e.into()),
            }
            ctx.cache.created_service(&ns, &svc_name);
        }
        Action::CreatePod {
            attempt,
            name: pod_name,
        } => {
            // One config for the whole attempt: its identity, tokens and pod agree.
            let runner = ctx.runner.load_full();
            ensure_policies(ctx, &ns).await?;
            let sa_token = ensure_identity(ctx, session, &runner.contract).await?;
            ensure_token(
                ctx,
                session,
                *attempt,
                &runner.contract,
                sa_token.as_deref(),
            )
            .await?;
            let mut pod = world::runner_pod(session, *attempt, &runner);
            world::mark_pod(&mut pod, &uid, *attempt, marker);
            match pods.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    tracing::info!(session = %name, namespace = %ns, attempt, "runner pod created");
                    ctx.cache.created_pod(created);
                }
                // Created by an earlier reconcile the cache has not shown,
                // or a squatter: look before believing either.
                Err(e) if is(&e, kube::core::Status::is_already_exists) => {
                    match pods.get_opt(pod_name).await? {
                        Some(found) if world::pod_is_ours(&found, &uid, *attempt, marker) => {
                            ctx.cache.created_pod(found);
                        }
                        _ => {
                            tracing::warn!(session = %name, namespace = %ns, pod = %pod_name, "runner pod name taken by a pod the reconciler did not make");
                            ctx.cache.foreign_pod(&ns, pod_name);
                            return Ok(Acted::Taken);
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Action::DeletePod { name: pod } => {
            match pods.delete(pod, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(session = %name, namespace = %ns, pod = %pod, "runner pod deleted")
                }
                Err(e) if is(&e, kube::core::Status::is_not_found) => {}
                Err(e) => return Err(e.into()),
            }
            ctx.cache.deleted_pod(&ns, pod);
        }
        Action::NotifyWorkflow(_) | Action::NotifyRepos(_) | Action::ClearDesiredPhase => {}
    }
    Ok(Acted::Done)
}

/// How often one reconcile plans again after finding a name taken.
const TAKEN_REPLANS: usize = 2;

fn is(e: &kube::Error, f: fn(&kube::core::Status) -> bool) -> bool {
    crate::apiclient::is_api_status(e, f)
}

/// The session's service account and its binding to the contract's
/// ClusterRole (made once, kept while the session lives), and a fresh token
/// of it for this attempt. An object of that name the session does not own
/// is an error: its runner must not run as someone else's account.
async fn ensure_identity(
    ctx: &Context,
    session: &AgenticSession,
    contract: &Contract,
) -> Result<Option<String>, Error> {
    let (Some(sa), Some(rb)) = (
        world::runner_service_account(session, contract),
        world::runner_role_binding(session, contract),
    ) else {
        return Ok(None);
    };
    let ns = session.namespace().unwrap_or_default();
    let uid = session.metadata.uid.clone().unwrap_or_default();
    let sa_name = sa.metadata.name.clone().unwrap_or_default();
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
    create_owned(&accounts, &sa, &uid, "ServiceAccount").await?;
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), &ns);
    create_owned(&bindings, &rb, &uid, "RoleBinding").await?;
    if contract.service_account_key.is_none() {
        return Ok(None);
    }
    let request = TokenRequest {
        metadata: Default::default(),
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            ..TokenRequestSpec::default()
        },
        status: None,
    };
    let minted = accounts
        .create_token_request(&sa_name, &PostParams::default(), &request)
        .await?;
    Ok(minted.status.map(|s| s.token))
}

/// Create `obj`, or accept the one already there if the session owns it.
async fn create_owned<K>(api: &Api<K>, obj: &K, session_uid: &str, kind: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(e) if is(&e, kube::core::Status::is_already_exists) => {
            let found = api.get_opt(&name).await?;
            let owned = found.is_some_and(|f| {
                f.meta()
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == session_uid && r.controller == Some(true))
            });
            if owned {
                Ok(())
            } else {
                Err(Error::Taken(format!(
                    "{kind} {name}: taken by an object the session does not own"
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The runner's token Secret for `attempt`, before its pod: made fresh
/// (a Secret of that name the reconciler cannot vouch for is replaced, so
/// a pre-made one never decides the runner's token).
async fn ensure_token(
    ctx: &Context,
    session: &AgenticSession,
    attempt: i64,
    contract: &Contract,
    service_account_token: Option<&str>,
) -> Result<(), Error> {
    let ns = session.namespace().unwrap_or_default();
    let uid = session.metadata.uid.clone().unwrap_or_default();
    let token = ctx.cache.marker().token(&uid, attempt);
    let secret = world::runner_token_secret(session, contract, &token, service_account_token);
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = contract.token_secret.render(&session.name_any());
    for _ in 0..3 {
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(()),
            Err(e) if is(&e, kube::core::Status::is_already_exists) => {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is(&e, kube::core::Status::is_not_found) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Missing(
        "a token Secret of its own (another writer keeps making it)",
    ))
}

/// The runner NetworkPolicies this controller keeps in `ns`: the egress
/// policy (metadata and the denied networks) and the ingress policy (the
/// runner port from the reconciler only).
fn desired_policies(ctx: &Context, ns: &str) -> Vec<NetworkPolicy> {
    let mut out = Vec::new();
    if let Some(denied) = &ctx.egress_denied {
        out.push(world::runner_egress_policy(ns, denied));
    }
    if let Some(from) = &ctx.ingress {
        out.push(world::runner_ingress_policy(
            ns,
            from,
            ctx.runner.load().contract.port,
        ));
    }
    out
}

/// Server-side apply of the desired policies, forced: an edited one is
/// restored, a deleted one re-created.
async fn apply_policies(ctx: &Context, ns: &str) -> Result<(), Error> {
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    for policy in desired_policies(ctx, ns) {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let mut body = serde_json::to_value(&policy)?;
        body["apiVersion"] = json!("networking.k8s.io/v1");
        body["kind"] = json!("NetworkPolicy");
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    Ok(())
}

/// The namespace's runner policies, before its first runner (one apply per
/// namespace; kept after by [`keep_policies`]).
async fn ensure_policies(ctx: &Context, ns: &str) -> Result<(), Error> {
    if ctx.egress_denied.is_none() && ctx.ingress.is_none() {
        return Ok(());
    }
    let mut done = ctx.policies_done.lock().await;
    if done.contains(ns) {
        return Ok(());
    }
    apply_policies(ctx, ns).await?;
    tracing::info!(namespace = %ns, "runner NetworkPolicies applied");
    done.insert(ns.to_owned());
    Ok(())
}

/// Keep the runner policies of every namespace that has them as this
/// controller made them: any change or deletion (seen by the watch) is
/// answered with the desired policies again, without a restart.
async fn keep_policies(ctx: Arc<Context>, namespace: Option<String>) {
    if ctx.egress_denied.is_none() && ctx.ingress.is_none() {
        return;
    }
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let stream = watcher(
        apis::<NetworkPolicy>(&ctx.client, namespace.as_deref()),
        owned,
    )
    .default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let (policy, deleted) = match event {
            Ok(watcher::Event::Delete(p)) => (p, true),
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
            _ => continue,
        };
        let Some(ns) = policy.namespace() else {
            continue;
        };
        let kept = ctx.policies_done.lock().await.contains(&ns);
        let as_desired = !deleted
            && desired_policies(&ctx, &ns)
                .iter()
                .any(|d| d.metadata.name == policy.metadata.name && d.spec == policy.spec);
        if kept && !as_desired {
            match apply_policies(&ctx, &ns).await {
                Ok(()) => tracing::warn!(
                    namespace = %ns,
                    policy = ?policy.metadata.name,
                    deleted,
                    "runner NetworkPolicy changed or deleted; restored"
                ),
                Err(e) => tracing::warn!(
                    namespace = %ns,
                    error = %e,
                    "restoring the runner NetworkPolicies failed"
                ),
            }
        }
    }
}

async fn reconcile_once(cached: &AgenticSession, ctx: &Context) -> Result<Requeue, Error> {
    if cached.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove pod and service.
        return Ok(Requeue::await_change());
    }
    let ns = cached.namespace().ok_or(Error::Missing("namespace"))?;
    let name = cached.name_any();
    let skey = session_key(cached);
    // Plan from the status we last wrote if the cache does not show it yet.
    let mut session = cached.clone();
    session.status = ctx.memory.status_for(&skey, cached.status.as_ref());
    let session = &session;
    let desired_text = session.annotations().get(DESIRED_PHASE).cloned();
    let observed = observe(session, ctx)?;
    // Notices planned now go to this pod (its IP); their answers are bound to it.
    let runner_uid = observed.pod.as_ref().map(|p| p.uid.clone());
    let runner_ip = observed.pod.as_ref().and_then(|p| p.ip.clone());
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
    // A name we meant to use may turn out to be someone else's: plan again
    // with that known and act on the new plan. Each such finding is a new
    // fact (a foreign Service, a foreign pod), so this ends; the last plan
    // that still meets one is kept for its status only.
    for round in 0..=TAKEN_REPLANS {
        let mut taken = false;
        notices.clear();
        clear_desired = false;
        for action in &planned.actions {
            match action {
                Action::NotifyWorkflow(w) => notices.push(NoticeBody::Workflow(w.clone())),
                // From what the runner was last known to have (its pod's
                // repos once it started, then each applied notice).
                Action::NotifyRepos(r) => notices.push(NoticeBody::Repos {
                    from: session
                        .status
                        .as_ref()
                        .and_then(|s| s.reconciled_repos.clone())
                        .unwrap_or_default(),
                    to: r.clone(),
                }),
                Action::ClearDesiredPhase => clear_desired = true,
                other => {
                    if let Acted::Taken = act(other, session, ctx, &pods, &services).await? {
                        taken = true;
                        break;
                    }
                }
            }
        }
        if !taken {
            break;
        }
        let observed = observe(session, ctx)?;
        planned = plan::plan(&view, &observed, now, &ctx.plan);
        if round == TAKEN_REPLANS {
            notices.clear();
            clear_desired = false;
        }
    }

    let told_workflow = notices.iter().any(|n| matches!(n, NoticeBody::Workflow(_)));
    let told_repos = notices
        .iter()
        .any(|n| matches!(n, NoticeBody::Repos { .. }));
    if let (false, Some(runner_uid)) = (notices.is_empty(), runner_uid) {
        let contract = ctx.runner.load().contract.clone();
        for body in notices {
            let attempt = current_attempt(session);
            let token = ctx
                .cache
                .marker()
                .token(session.metadata.uid.as_deref().unwrap_or_default(), attempt);
            let runner = RunnerRef {
                namespace: &ns,
                session: &name,
                attempt,
                pod_ip: runner_ip.as_deref(),
                token: &token,
                port: contract.port,
                api: &contract.notices,
            };
            let result = ctx.notifier.notify(runner, body.clone()).await;
            if let Err(e) = &result {
                tracing::warn!(session = %name, namespace = %ns, error = %e, notice = body.what(), "runner notice failed");
            }
            let at = (ctx.clock)();
            match body {
                NoticeBody::Workflow(w) => {
                    ctx.memory
                        .record_workflow(&skey, &runner_uid, w, &result, at)
                }
                NoticeBody::Repos { to, .. } => {
                    ctx.memory.record_repos(&skey, &runner_uid, to, &result, at)
                }
            }
        }
        ctx.export_memory();
        // The answers are part of the world now, and news for the planner.
        let mut observed = observe(session, ctx)?;
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
        // Server-side apply of exactly the fields this controller owns,
        // forced and without a resourceVersion precondition: field
        // ownership keeps the runner's fields, and only this controller
        // writes these (from the status it last wrote, see Memory).
        let owned = owned_status(&planned.status);
        let api: Api<AgenticSession> = Api::namespaced(ctx.client.clone(), &ns);
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": ns},
            "status": owned,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        ctx.memory.wrote(&skey, owned);
        tracing::info!(
            session = %name,
            namespace = %ns,
            phase = ?planned.status.phase.as_ref().map(|p| p.as_str()),
            attempt = ?planned.status.attempt,
            "status written"
        );
    }

    events::publish(&ctx.recorder, &ctx.metrics, session, &planned.events).await;

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
                if crate::apiclient::is_api_status(&e, kube::core::Status::is_invalid)
                    || crate::apiclient::is_api_status(&e, kube::core::Status::is_not_found) =>
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

/// Drop what the controller never reads, so the caches stay small.
fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// Run the controller until `stop` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    namespace: Option<String>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let Some(writers) = ctx.take_cache_writers() else {
        tracing::error!("the controller's caches are already in use");
        return;
    };
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    // Our pods and services, cached: the same streams fill the caches and
    // trigger the owners' reconciles, the cache first.
    let pods = watcher(apis::<Pod>(&client, ns), owned.clone())
        .default_backoff()
        .modify(slim)
        .reflect(writers.pods)
        .touched_objects();
    let services = watcher(apis::<Service>(&client, ns), owned)
        .default_backoff()
        .modify(slim)
        .reflect(writers.services)
        .touched_objects();
    // Sessions too, without their managedFields: a third of a stored
    // session, and 10,000 sessions are cached.
    let (sessions, sessions_writer) = reflector::store();
    let session_stream = watcher(
        apis::<AgenticSession>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(slim)
    .reflect(sessions_writer)
    .applied_objects();
    let controller = Controller::for_stream(session_stream, sessions)
        .owns_stream(pods)
        .owns_stream(services)
        .with_config(controller::Config::default().concurrency(ctx.concurrency))
        .graceful_shutdown_on(stop);
    let store = controller.store();
    let keeper = tokio::spawn(keep_policies(ctx.clone(), namespace.clone()));
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
    keeper.abort();
}
