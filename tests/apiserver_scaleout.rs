//! Scale-out and rollout through a real kube-apiserver, with HAProxy
//! (`mode tcp`, round-robin per connection) standing in for kube-proxy in
//! front of the webhook's replicas. The apiserver reaches the webhook by
//! host name (`agentic-webhook.agentic-system.svc`, resolved through its
//! own /etc/hosts), so it calls it as it calls an in-cluster webhook: over
//! HTTP/1.1, from a pool of kept-alive connections.
//!
//! `SCALEOUT_ROUNDS=N` replaces every replica N times in the rolling
//! restart (default 4: 12 replacements).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::balancer::Balancer;
use common::envtest::{self, ControlPlane};
use common::installed::{render, serve_with, sessions_in, wait_until_serving};
use common::*;
use serde_json::json;

const HOST: &str = "agentic-webhook.agentic-system.svc";
const SLOTS: usize = 8;
/// Concurrent writers in the scale-out: more than the 5 replicas, so each
/// replica can hold a pooled connection at once.
const WRITERS: usize = 8;

struct Env {
    cp: &'static ControlPlane,
    lb: Balancer,
    certs: std::path::PathBuf,
}

static ENV: OnceLock<Option<Env>> = OnceLock::new();
/// The tests share one webhook address; they take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env() -> Option<&'static Env> {
    ENV.get_or_init(|| {
        envtest::resolve_in_apiserver(&[(HOST, "127.0.0.1")]);
        let cp = envtest::control_plane()?;
        let dir = cp.dir().join("scaleout");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let lb = Balancer::start(&dir, SLOTS)?;
        // One serving pair for every replica (a Secret, in a cluster); its
        // names are the Service's.
        make_certs(&dir);
        let url = format!("https://{HOST}:{}", lb.addr.port());
        let yaml = render(&[
            "--ca-file",
            dir.join("ca.crt").to_str().unwrap_or_default(),
            "--url",
            &url,
        ]);
        let env = Env { cp, lb, certs: dir };
        let first = Replica::start(&env, 0, &[]);
        cp.kubectl_ok(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&yaml),
        );
        wait_until_serving(cp);
        first.stop(&env);
        Some(env)
    })
    .as_ref()
}

/// One webhook replica (a pod) and the balancer slot it is in.
struct Replica {
    server: Server,
    slot: usize,
}

impl Replica {
    fn start(env: &Env, slot: usize, extra: &[&str]) -> Replica {
        let server = serve_with(&env.certs, extra, false);
        // Ready before it is an endpoint, as with a readiness probe.
        assert_eq!(http_get(server.probes, "/readyz").0, 200);
        env.lb.add(slot, server.https);
        Replica { server, slot }
    }

    fn stop(self, env: &Env) {
        env.lb.remove(self.slot);
        drop(self.server);
    }

    /// Requests this replica has answered (its own /metrics).
    fn served(&self) -> f64 {
        served(&http_get(self.server.probes, "/metrics").1)
    }
}

fn served(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("controller_runtime_webhook_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Concurrent writers: each creates a session, then merge-patches its
/// spec, again and again. Every write passes both webhooks
/// (`failurePolicy: Fail`), so a webhook call that fails fails the write.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Writers {
    async fn start(cp: &ControlPlane, n: usize) -> Writers {
        let client = cp.client().await;
        let ns = cp.namespace(&client, "scaleout").await;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|w| {
                let api = sessions_in(&client, &ns, "v1alpha2");
                let stop = stop.clone();
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0usize, Vec::new());
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let name = format!("w{w}-{i}");
                        let obj = serde_json::from_value(json!({
                            "apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
                            "metadata": {"name": name},
                            "spec": {"initialPrompt": "fix the flaky test",
                                     "repos": [{"url": "https://github.com/acme/api.git"}]},
                        }))
                        .unwrap_or_else(|e| panic!("{e}"));
                        match api.create(&Default::default(), &obj).await {
                            Ok(_) => ok += 1,
                            Err(e) => {
                                failed.push(format!("create {name}: {e}"));
                                continue;
                            }
                        }
                        let patch = json!({"spec": {"initialPrompt": format!("try {i} again")}});
                        match api
                            .patch(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => ok += 1,
                            Err(e) => failed.push(format!("patch {name}: {e}")),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in self.tasks {
            let (o, f) = t.await.unwrap_or_else(|e| panic!("{e}"));
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}

/// Each replica's share of the requests served since the last sample.
struct Shares {
    last: Vec<f64>,
}

impl Shares {
    fn sample(&mut self, replicas: &[Replica]) -> Vec<f64> {
        let now: Vec<f64> = replicas.iter().map(Replica::served).collect();
        self.last.resize(now.len(), 0.0);
        let delta: Vec<f64> = now.iter().zip(&self.last).map(|(n, l)| n - l).collect();
        self.last = now;
        let total: f64 = delta.iter().sum();
        delta
            .iter()
            .map(|d| if total > 0.0 { d / total } else { 0.0 })
            .collect()
    }
}

fn percent(shares: &[f64]) -> String {
    shares
        .iter()
        .map(|s| format!("{:>3.0}%", s * 100.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 3 replicas, then 5, under 8 writers; each replica's share per second.
/// Returns the shares over the last 8 s (four ages) and the writes.
async fn scale_3_to_5(env: &Env, age: &str) -> (Vec<f64>, usize, Vec<String>) {
    let args = ["--max-connection-age", age];
    let mut replicas: Vec<Replica> = (0..3).map(|s| Replica::start(env, s, &args)).collect();
    let writers = Writers::start(env.cp, WRITERS).await;
    let mut shares = Shares { last: vec![] };
    let tick = Duration::from_secs(1);
    for t in 0..3 {
        tokio::time::sleep(tick).await;
        say_line(age, t, &shares.sample(&replicas));
    }
    // Scale out: two new endpoints.
    replicas.push(Replica::start(env, 3, &args));
    replicas.push(Replica::start(env, 4, &args));
    let before = replicas.iter().map(Replica::served).collect::<Vec<_>>();
    shares.last = before;
    let mut window_start = Vec::new();
    for t in 3..17 {
        if t == 9 {
            window_start = replicas.iter().map(Replica::served).collect();
        }
        tokio::time::sleep(tick).await;
        say_line(age, t, &shares.sample(&replicas));
    }
    let (ok, failed) = writers.finish().await;
    let end: Vec<f64> = replicas.iter().map(Replica::served).collect();
    let delta: Vec<f64> = end.iter().zip(&window_start).map(|(e, s)| e - s).collect();
    let total: f64 = delta.iter().sum();
    let last: Vec<f64> = delta.iter().map(|d| d / total.max(1.0)).collect();
    let h1: f64 = replicas
        .iter()
        .map(|r| {
            metric(
                &http_get(r.server.probes, "/metrics").1,
                "agentic_webhook_connections_total{protocol=\"http/1.1\"}",
            )
            .unwrap_or(0.0)
        })
        .sum();
    envtest::say(&format!(
        "scale-out, age {age}: {ok} writes, {} failed; last 8 s shares {}; {h1} HTTP/1.1 connections opened",
        failed.len(),
        percent(&last)
    ));
    for r in replicas {
        r.stop(env);
    }
    (last, ok, failed)
}

fn say_line(age: &str, t: usize, shares: &[f64]) {
    envtest::say(&format!("  age {age:>3} t={t:>2}s  {}", percent(shares)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_connection_age_replicas_added_under_load_get_their_share_and_no_write_fails() {
    let Some(env) = env() else { return };
    let _turn = TURN.lock().await;

    // Without an age: reported, for comparison (the pool keeps its
    // connections, so the new replicas are starved).
    let (without, ok0, failed0) = scale_3_to_5(env, "0").await;
    assert!(failed0.is_empty(), "writes failed: {failed0:?}");
    assert!(ok0 > 500, "too few writes to mean anything: {ok0}");

    let (with, ok, failed) = scale_3_to_5(env, "2s").await;
    assert!(
        failed.is_empty(),
        "writes failed while connections were recycled: {failed:?}"
    );
    assert!(ok > 500, "too few writes to mean anything: {ok}");
    for (i, share) in with.iter().enumerate() {
        assert!(
            *share >= 0.10,
            "replica {i} served {:.0}% in the last 8 s with a 2 s age (all: {}; without an age: {})",
            share * 100.0,
            percent(&with),
            percent(&without)
        );
    }
}

fn rounds() -> usize {
    std::env::var("SCALEOUT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// A cheap random delay (the endpoint update lags the SIGTERM by a
/// varying amount in a cluster).
fn jitter_ms(max: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now()) % max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_under_concurrent_writers_lose_no_write() {
    let Some(env) = env() else { return };
    let _turn = TURN.lock().await;
    // As shipped (manifests/base/webhook.yaml): default age, 2 s delay.
    let args = ["--shutdown-delay", "2s", "--shutdown-grace", "20s"];
    let mut replicas: Vec<Option<Replica>> = (0..3)
        .map(|s| Some(Replica::start(env, s, &args)))
        .collect();
    let mut free: Vec<usize> = (3..SLOTS).collect();
    let writers = Writers::start(env.cp, 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut replaced = 0;
    for _ in 0..rounds() {
        for r in replicas.iter_mut() {
            // maxSurge 1: the new pod is ready and an endpoint first.
            let slot = free.remove(0);
            let new = Replica::start(env, slot, &args);
            let Some(mut old) = r.replace(new) else {
                continue;
            };
            // Then the old one: SIGTERM, and its endpoint removed a
            // moment later (propagation), while the writers go on.
            old.server.signal("TERM");
            tokio::time::sleep(Duration::from_millis(jitter_ms(400))).await;
            env.lb.remove(old.slot);
            let status = tokio::task::spawn_blocking(move || {
                let status = old.server.wait_exit(Duration::from_secs(30));
                (status, old.slot)
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(status.0.and_then(|s| s.code()), Some(0), "old replica exit");
            free.push(status.1);
            replaced += 1;
        }
    }
    let took = started.elapsed();
    let (ok, failed) = writers.finish().await;
    envtest::say(&format!(
        "rolling restart: {replaced} replacements in {:.1}s, {ok} writes, {} failed",
        took.as_secs_f64(),
        failed.len()
    ));
    for r in replicas.into_iter().flatten() {
        r.stop(env);
    }
    assert!(
        failed.is_empty(),
        "writes failed during rolling restarts: {failed:?}"
    );
    assert!(ok > 1000, "too few writes to mean anything: {ok}");
}
