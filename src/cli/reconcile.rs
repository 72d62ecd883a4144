//! `agentic-webhook reconcile`: the lifecycle controller.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::controller::{Context, run_controller};
use crate::lifecycle::metrics::{ApiRequestLabels, Metrics};
use crate::lifecycle::notice::{DEFAULT_RUNNER_URL_TEMPLATE, HttpNotifier, RunnerUrlTemplate};
use crate::lifecycle::plan::PlanConfig;
use crate::lifecycle::world::RunnerConfig;

use super::runner::RunnerArgs;
use crate::telemetry::Registry;
use crate::telemetry::probes::{self, Health};
use crate::{apiclient, duration, filewatch};

#[derive(clap::Args, Clone, Debug)]
pub struct ReconcileArgs {
    #[command(flatten)]
    kube: super::KubeArgs,
    /// Image of the runner container.
    #[command(flatten)]
    runner: RunnerArgs,
    /// Give each namespace with runners the NetworkPolicy
    /// `agentic-runner-egress`: runners may not reach the cloud metadata
    /// addresses nor --runner-egress-deny networks, whatever a git host
    /// resolves to at clone time (docs/rules.md). On by default.
    #[arg(
        long,
        overrides_with = "no_runner_egress_policy",
        default_value_t = true
    )]
    runner_egress_policy: bool,
    /// Make no egress NetworkPolicy (the platform ships its own).
    #[arg(long)]
    no_runner_egress_policy: bool,
    /// Give each namespace with runners the NetworkPolicy
    /// `agentic-runner-ingress`: only the reconciler's pods (and the
    /// namespaces --runner-ingress-from-namespace names) may open a runner's
    /// port. On by default.
    #[arg(
        long,
        overrides_with = "no_runner_ingress_policy",
        default_value_t = true
    )]
    runner_ingress_policy: bool,
    /// Make no ingress NetworkPolicy.
    #[arg(long)]
    no_runner_ingress_policy: bool,
    /// A namespace whose pods may also reach runners (the ambient-code
    /// platform's backend, which proxies the runner's AG-UI stream:
    /// `ambient-code`); repeatable.
    #[arg(long = "runner-ingress-from-namespace", value_name = "NAMESPACE")]
    runner_ingress_from: Vec<String>,
    /// The Secret (in --lease-namespace) holding the key the reconciler
    /// marks its runner pods and Services with and derives runner tokens
    /// from; made on first start.
    #[arg(long, default_value = "agentic-reconciler-key")]
    key_secret: String,
    /// A network runners may not reach (the cluster's pod and service
    /// CIDRs); repeatable.
    #[arg(long = "runner-egress-deny", value_name = "CIDR", value_parser = clap::value_parser!(ipnet::IpNet))]
    runner_egress_deny: Vec<ipnet::IpNet>,
    /// Attempts per run before the session fails with RetriesExhausted.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i64).range(1..=100))]
    max_attempts: i64,
    /// Only reconcile sessions in this namespace (default: all namespaces).
    #[arg(long, env = "AGENTIC_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Act only while holding the Lease (default on; run ≥2 replicas safely).
    #[arg(long, conflicts_with = "no_leader_election")]
    leader_election: bool,
    /// Act without a Lease (a single replica, or local development).
    #[arg(long)]
    no_leader_election: bool,
    /// Name of the coordination.k8s.io Lease.
    #[arg(long, default_value = "agentic-reconciler")]
    lease_name: String,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "agentic-system")]
    lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Plain HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8081", env = "AGENTIC_PROBE_ADDR")]
    probe_addr: SocketAddr,
    /// Where runners answer notices: placeholders {session}, {service}
    /// (session-<name>), {namespace}, {port} (8001), {attempt}. Change it for
    /// another DNS layout, or to reach runners from outside the cluster.
    #[arg(
        long,
        env = "AGENTIC_RUNNER_URL_TEMPLATE",
        default_value = DEFAULT_RUNNER_URL_TEMPLATE,
        value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<RunnerUrlTemplate>())
    )]
    runner_url_template: RunnerUrlTemplate,
    /// How long a Lease is held without renewal before another replica may
    /// take over (the failover time after a leader dies).
    #[arg(long, default_value = "15s", value_parser = lease_duration)]
    lease_duration: Duration,
    /// Reconciles in flight at once (each makes at most a few API requests;
    /// reads come from the controller's caches).
    #[arg(long, default_value_t = crate::lifecycle::controller::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=256))]
    max_concurrent_reconciles: u16,
    /// A client-side limit of Kubernetes API requests a second, on average
    /// (like client-go's QPS). Default: none. The apiserver's API Priority
    /// and Fairness shares it among its clients (SIG API Machinery's advice,
    /// controller-runtime's default since 2025); the install's FlowSchema
    /// puts the reconciler in its own priority level. Set it to cap the
    /// reconciler anyway.
    #[arg(long, value_parser = positive_rate)]
    api_qps: Option<f64>,
    /// Requests allowed at once above --api-qps.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..), requires = "api_qps")]
    api_burst: u32,
    /// Timeout of one notice to a runner (POST /workflow, /repos).
    #[arg(long, default_value = "5s", value_parser = duration::flag)]
    notice_timeout: Duration,
    /// Longest wait for the headers of one Kubernetes API response (watches
    /// stream after their headers and are not cut).
    #[arg(long, default_value = "30s", value_parser = duration::positive_flag)]
    api_timeout: Duration,
    /// Longest one reconcile may take (API calls, notices, conflict
    /// retries); past it the attempt is dropped and requeued with backoff.
    #[arg(long, default_value = "2m", value_parser = duration::positive_flag)]
    reconcile_timeout: Duration,
}

/// Renew this long before the Lease would expire.
const LEASE_GRACE_SECS: u64 = 2;

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(q) if q.is_finite() && q > 0.0 => Ok(q),
        _ => Err(format!(
            "{text:?} is not a positive number of requests a second"
        )),
    }
}

fn lease_duration(text: &str) -> Result<Duration, String> {
    let d = duration::flag(text)?;
    if d.as_secs() <= LEASE_GRACE_SECS || d.subsec_nanos() != 0 {
        return Err(format!(
            "must be whole seconds, more than {LEASE_GRACE_SECS}s (the renewal margin)"
        ));
    }
    Ok(d)
}

pub fn run(args: &ReconcileArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

/// How often the template file is re-read besides the directory watch.
const TEMPLATE_POLL: Duration = Duration::from_secs(5);

/// The runner config at start (a bad template or contract stops the
/// reconciler here), and the fingerprint of the files it came from.
fn load_runner(args: &RunnerArgs) -> anyhow::Result<(RunnerConfig, u64)> {
    let files = args.files();
    let (fp, contents) = filewatch::snapshot(&files);
    let cfg = args.config(&files, &contents?)?;
    tracing::info!(files = ?files, contract = %cfg.contract.name, "runner pod template and contract loaded");
    Ok((cfg, fp))
}

/// Swap in each good new template and contract; keep the last good pair otherwise.
async fn reload_runner(
    args: RunnerArgs,
    fingerprint: u64,
    slot: Arc<ArcSwap<RunnerConfig>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let files = args.files();
    filewatch::watch(files.clone(), fingerprint, TEMPLATE_POLL, stop, move |contents| {
        let loaded = contents
            .map_err(anyhow::Error::from)
            .and_then(|c| args.config(&files, &c));
        match loaded {
            Ok(cfg) => {
                tracing::info!(files = ?files, contract = %cfg.contract.name, "runner pod template and contract reloaded");
                slot.store(Arc::new(cfg));
                metrics.template_reload(true);
            }
            Err(e) => {
                metrics.template_reload(false);
                tracing::error!(files = ?files, error = format!("{e:#}"), "runner pod template reload failed; keeping the last good template and contract");
            }
        }
    })
    .await;
}

async fn run_async(args: &ReconcileArgs) -> anyhow::Result<ExitCode> {
    let (runner, template_fp) = load_runner(&args.runner)?;
    let registry = Registry::new();
    let metrics = Metrics::register(&registry);
    let health = Health::without_tls();
    let probe = tokio::net::TcpListener::bind(args.probe_addr)
        .await
        .with_context(|| format!("binding {}", args.probe_addr))?;
    let stop = CancellationToken::new();
    let probe_router = probes::router(health.clone(), registry);
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = axum::serve(probe, probe_router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        }
    });
    tokio::spawn({
        let stop = stop.clone();
        let health = health.clone();
        async move {
            crate::server::termination_signal().await;
            health.begin_shutdown();
            stop.cancel();
        }
    });

    let counted = metrics.clone();
    let sink: apiclient::RequestSink = Arc::new(move |verb, resource, code| {
        counted
            .api_requests
            .get_or_create(&ApiRequestLabels {
                verb: verb.to_owned(),
                resource: resource.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    });
    let client = apiclient::infer_controller(
        &args.kube.target(),
        &apiclient::ControllerClient {
            timeout: args.api_timeout,
            limit: args.api_qps.map(|qps| (qps, args.api_burst)),
            sink,
        },
    )
    .await
    .context("building the kube client")?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("agentic-reconciler-{}", std::process::id()));
    let marker = crate::lifecycle::key::load_or_create(
        client.clone(),
        &args.lease_namespace,
        &args.key_secret,
    )
    .await
    .context("the reconciler's key")?;
    let ctx = Context::new(
        client.clone(),
        runner,
        PlanConfig {
            max_attempts: args.max_attempts,
        },
        Arc::new(HttpNotifier::new(
            args.notice_timeout,
            args.runner_url_template.clone(),
        )),
        metrics,
        marker,
    )
    .with_reconcile_timeout(args.reconcile_timeout)
    .with_concurrency(args.max_concurrent_reconciles)
    .with_instance(identity.clone());
    let ctx = if args.no_runner_egress_policy {
        ctx
    } else {
        ctx.with_egress_policy(args.runner_egress_deny.clone())
    };
    let ctx = if args.no_runner_ingress_policy {
        ctx
    } else {
        ctx.with_ingress_policy(crate::lifecycle::world::IngressSources {
            reconciler_namespace: args.lease_namespace.clone(),
            also: args.runner_ingress_from.clone(),
        })
    };
    if !args.runner.files().is_empty() {
        tokio::spawn(reload_runner(
            args.runner.clone(),
            template_fp,
            ctx.runner.clone(),
            ctx.metrics.clone(),
            stop.clone(),
        ));
    }

    if args.no_leader_election {
        tracing::info!(namespace = ?args.namespace, "reconciling without leader election");
        let token = stop.clone();
        run_controller(ctx, args.namespace.clone(), async move {
            token.cancelled().await
        })
        .await;
        return Ok(ExitCode::SUCCESS);
    }

    let manager = LeaseManagerBuilder::new(client, &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration.as_secs())
        .with_grace(LEASE_GRACE_SECS)
        .with_field_manager(crate::lifecycle::controller::FIELD_MANAGER)
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(lease = %args.lease_name, %identity, "waiting for leadership");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(ExitCode::SUCCESS),
            changed = leader.changed() => changed.context("lease watcher stopped")?,
        }
    }
    tracing::info!(%identity, "leading: reconciling");
    // Stop acting the moment leadership is lost; the process then exits so a
    // fresh start re-joins the election cleanly.
    let lost = CancellationToken::new();
    let until = {
        let stop = stop.clone();
        let lost = lost.clone();
        async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = lost.cancelled() => {}
            }
        }
    };
    let watch_lease = tokio::spawn({
        let lost = lost.clone();
        async move {
            while leader.changed().await.is_ok() {
                if !*leader.borrow() {
                    break;
                }
            }
            lost.cancel();
            drop(leader);
        }
    });
    run_controller(ctx, args.namespace.clone(), until).await;
    watch_lease.abort();
    let _ = lease_task.await;
    if lost.is_cancelled() && !stop.is_cancelled() {
        anyhow::bail!("lost leadership of lease {}", args.lease_name);
    }
    Ok(ExitCode::SUCCESS)
}
