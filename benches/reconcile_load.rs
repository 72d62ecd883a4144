//! How much the reconciler costs the apiserver, on a real kube-apiserver
//! v1.35 + etcd (the test harness's) with the product installed.
//!
//! For each size N: N sessions created by C concurrent clients without a
//! reconciler, then N more with `agentic-webhook reconcile` running
//! (release build, scoped to their namespace); reports the creation time of
//! both, the lag from the last create until every session is Creating, the
//! requests the reconciler made per session (from the apiserver's own
//! `apiserver_request_total` and from the reconciler's
//! `agentic_reconciler_api_requests_total`), and the reconciler's RSS.
//!
//!     cargo bench --bench reconcile_load -- --sessions 100,1000,10000 --clients 8
//!
//! Under `cargo test` (no `--bench`) it runs once with 20 sessions.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::envtest::{ControlPlane, Principal, Who, free_port};
use common::installed::{GROUP, installed, sessions_in};
use common::{BIN, Proc};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

struct Args {
    sizes: Vec<usize>,
    clients: usize,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let bench = argv.iter().any(|a| a == "--bench");
    let value = |flag: &str| {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    let sizes = value("--sessions")
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| if bench { vec![100, 1000] } else { vec![20] });
    let clients = value("--clients")
        .and_then(|c| c.parse().ok())
        .unwrap_or(if bench { 8 } else { 4 });
    Args { sizes, clients }
}

fn sessions(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    sessions_in(client, ns, "v1alpha2")
}

/// A ~1.5 KB session, as a platform's backend writes them.
fn session(ns: &str, i: usize) -> DynamicObject {
    let prompt = format!(
        "Session {i}: fix the flaky login test, then update the docs. {}",
        "Keep the change small and explain it in the PR description. ".repeat(16)
    );
    serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1alpha2"), "kind": "AgenticSession",
        "metadata": {"name": format!("s{i}"), "namespace": ns, "labels": {"team": "bench"}},
        "spec": {
            "initialPrompt": prompt,
            "repos": [{"url": "https://github.com/acme/api.git", "branch": "main"},
                      {"url": "https://github.com/acme/docs.git", "branch": "main"}],
            "llmSettings": {"model": "claude-sonnet-4-6", "temperature": 0.7, "maxTokens": 4000},
            "interactive": false, "timeoutSeconds": 3600,
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Create `n` sessions in `ns` with `clients` concurrent clients; returns
/// the wall time.
async fn create_all(cp: &ControlPlane, ns: &str, n: usize, clients: usize) -> Duration {
    let mut handles = Vec::new();
    let started = Instant::now();
    for c in 0..clients {
        let client = cp.client().await;
        let ns = ns.to_owned();
        handles.push(tokio::spawn(async move {
            let api = sessions(&client, &ns);
            for i in (c..n).step_by(clients) {
                api.create(&PostParams::default(), &session(&ns, i))
                    .await
                    .unwrap_or_else(|e| panic!("create s{i}: {e}"));
            }
        }));
    }
    for h in handles {
        h.await.unwrap_or_else(|e| panic!("{e}"));
    }
    started.elapsed()
}

/// `apiserver_request_total`, summed by (verb, resource[/subresource]).
async fn apiserver_requests(client: &kube::Client) -> BTreeMap<(String, String), f64> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let text = client
        .request_text(req)
        .await
        .unwrap_or_else(|e| panic!("/metrics: {e}"));
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        *out.entry((label("verb"), resource)).or_insert(0.0) += value.parse().unwrap_or(0.0);
    }
    out
}

/// What the reconciler (and not the bench) asked of the apiserver.
fn reconciler_share(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for ((verb, resource), v) in after {
        let d = v - before
            .get(&(verb.clone(), resource.clone()))
            .unwrap_or(&0.0);
        let ours = match resource.as_str() {
            "pods" | "services" | "events" | "leases" | "agenticsessions/status" => true,
            // The runner's token Secret and identity (the shipped contract's
            // service account, its binding and a token of it), and the
            // namespace's runner NetworkPolicies: the bench writes none.
            "secrets"
            | "serviceaccounts"
            | "serviceaccounts/token"
            | "rolebindings"
            | "networkpolicies" => true,
            // The bench creates, lists and watches sessions; the reconciler patches them.
            "agenticsessions" => !matches!(verb.as_str(), "POST" | "LIST" | "WATCH"),
            _ => false,
        };
        if ours && d > 0.0 {
            out.insert((verb.clone(), resource.clone()), d);
        }
    }
    out
}

/// The reconciler under test: this build's, or `AGENTIC_RECONCILER_BIN`
/// (e.g. an earlier release, for a before/after comparison in one harness).
fn reconciler_bin() -> String {
    std::env::var("AGENTIC_RECONCILER_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// Extra flags for the reconciler under test (`AGENTIC_RECONCILER_FLAGS`,
/// space-separated), e.g. `--max-concurrent-reconciles 4`.
fn reconciler_flags() -> Vec<String> {
    std::env::var("AGENTIC_RECONCILER_FLAGS")
        .map(|f| f.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

fn scrape(addr: SocketAddr) -> String {
    if std::net::TcpStream::connect(addr).is_err() {
        return String::new();
    }
    common::http_get(addr, "/metrics").1
}

/// Reconciliations the reconciler finished, every result.
fn reconciles(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("agentic_webhook_reconciles_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn reconciler_requests(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("agentic_reconciler_api_requests_total{"))
        .filter(|l| !l.contains("verb=\"watch\"") && !l.contains("verb=\"list\""))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Until every session in `ns` is past Pending; returns when that was.
async fn all_creating(client: &kube::Client, ns: &str, n: usize) -> Instant {
    let api = sessions(client, ns);
    let mut phases: HashMap<String, String> = HashMap::new();
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
    let deadline = Instant::now() + Duration::from_secs(1800);
    while let Some(item) = stream.next().await {
        if let Ok(o) = item {
            let phase = o.data["status"]["phase"].as_str().unwrap_or("").to_owned();
            phases.insert(o.metadata.name.clone().unwrap_or_default(), phase);
        }
        let done = phases
            .values()
            .filter(|p| matches!(p.as_str(), "Creating" | "Running"))
            .count();
        if done >= n {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} reached Creating"
        );
    }
    panic!("the watch ended");
}

struct Row {
    n: usize,
    without: Duration,
    with: Duration,
    lag: Duration,
    apiserver: f64,
    own: f64,
    /// Reconciles from the first create until every session was Creating.
    reconciles: f64,
    /// First create to all Creating.
    window: Duration,
    detail: BTreeMap<(String, String), f64>,
    rss_kib: u64,
    hwm_kib: u64,
}

async fn run(cp: &ControlPlane, n: usize, clients: usize) -> Row {
    let admin = cp.client().await;
    let base = cp.namespace(&admin, &format!("base-{n}")).await;
    let without = create_all(cp, &base, n, clients).await;

    let ns = cp.namespace(&admin, &format!("load-{n}")).await;
    let probes: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(reconciler_bin());
    cmd.args(["--log-format", "json", "reconcile", "--no-leader-election"])
        .args(["--namespace", &ns, "--probe-addr", &probes.to_string()])
        .args(["--runner-url-template", "http://127.0.0.1:9/{session}"])
        .args(reconciler_flags())
        .env(
            "KUBECONFIG",
            cp.kubeconfig(&Who::Token(Principal::Reconciler)),
        )
        .env("RUST_LOG", "warn");
    let reconciler = Proc::spawn(cmd, false);
    // Ready: its watches have listed (its /metrics answers and it is idle).
    let ready_by = Instant::now() + Duration::from_secs(30);
    while scrape(probes).is_empty() && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = apiserver_requests(&admin).await;
    let own_before = reconciler_requests(&scrape(probes));
    let reconciles_before = reconciles(&scrape(probes));

    let first_create = Instant::now();
    let with = create_all(cp, &ns, n, clients).await;
    let last_create = Instant::now();
    let done = all_creating(&admin, &ns, n).await;
    let reconciles_done = reconciles(&scrape(probes));
    // Let the writes of the last reconciles land in the counters.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = apiserver_requests(&admin).await;
    let own_after = reconciler_requests(&scrape(probes));
    let detail = reconciler_share(&before, &after);
    let row = Row {
        n,
        without,
        with,
        lag: done.saturating_duration_since(last_create),
        apiserver: detail.values().sum(),
        own: own_after - own_before,
        reconciles: reconciles_done - reconciles_before,
        window: done.saturating_duration_since(first_create),
        detail,
        rss_kib: rss_kib(reconciler.pid(), "VmRSS:"),
        hwm_kib: rss_kib(reconciler.pid(), "VmHWM:"),
    };
    drop(reconciler);
    row
}

fn main() {
    let args = args();
    let Some(env) = installed() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "reconcile_load: {} concurrent clients, webhook {}, reconciler {} {:?}, sessions ~1.5 KB",
        args.clients,
        env.url,
        reconciler_bin(),
        reconciler_flags()
    );
    println!(
        "{:>6} | {:>11} | {:>11} | {:>5} | {:>9} | {:>12} | {:>12} | {:>9}",
        "N", "create w/o", "create with", "ratio", "lag", "req/session", "own count", "RSS/peak"
    );
    for n in args.sizes {
        let r = runtime.block_on(run(env.cp, n, args.clients));
        let per = |x: f64| x / r.n as f64;
        println!(
            "{:>6} | {:>10.2}s | {:>10.2}s | {:>5.2} | {:>8.2}s | {:>12.2} | {:>12.2} | {:>4}/{:>4} MiB",
            r.n,
            r.without.as_secs_f64(),
            r.with.as_secs_f64(),
            r.with.as_secs_f64() / r.without.as_secs_f64().max(1e-9),
            r.lag.as_secs_f64(),
            per(r.apiserver),
            per(r.own),
            r.rss_kib / 1024,
            r.hwm_kib / 1024,
        );
        let breakdown: Vec<String> = r
            .detail
            .iter()
            .map(|((verb, res), v)| format!("{verb} {res} {:.2}", per(*v)))
            .collect();
        println!("         per session: {}", breakdown.join(", "));
        println!(
            "         reconciles until all Creating: {:.0} ({:.2} per session), {:.1}/s over {:.1} s from the first create",
            r.reconciles,
            per(r.reconciles),
            r.reconciles / r.window.as_secs_f64().max(1e-9),
            r.window.as_secs_f64()
        );
    }
}
