//! What the webhooks cost each write, end to end through a real
//! kube-apiserver v1.35 + etcd (the test harness's), one client, one write
//! at a time, in three set-ups of the same cluster:
//!
//! - no webhook configurations (the CRD alone),
//! - the product calling both webhooks on every write (`--no-match-conditions`),
//! - the product as shipped (matchConditions),
//! - the same two configurations pointed at agnhost 2.59 (`agnhost webhook`,
//!   `/custom-resource`: the Kubernetes e2e webhook, which decodes the review
//!   and allows), to tell the apiserver's cost of a call from ours.
//!
//! agnhost listens on every interface, so its set-ups run only when the
//! bench is alone in a network namespace (`unshare --net`, as
//! scripts/bench.sh runs it); elsewhere they are skipped and said so.
//!
//! Three writes of a ~1.5 KB normalized v1alpha2 session: create, a label
//! change (merge patch: metadata only) and a spec change (merge patch of
//! `displayName`). Each set-up is confirmed before it is measured from the
//! apiserver's own count of webhook calls (and, for agnhost, ours at zero).
//!
//!     cargo bench --bench write_latency -- --writes 300
//!
//! Under `cargo test` (no `--bench`) it runs once with 20 writes of each kind.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use std::path::PathBuf;
use std::process::Command;

use common::envtest::{Who, free_port, shared_binary};
use common::installed::{GROUP, Installed, calls, installed, render, sessions_in};
use common::{Proc, make_certs};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;
use serde_json::json;

fn writes() -> usize {
    let argv: Vec<String> = std::env::args().collect();
    let bench = argv.iter().any(|a| a == "--bench");
    argv.iter()
        .position(|a| a == "--writes")
        .and_then(|i| argv.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if bench { 300 } else { 20 })
}

fn session(ns: &str, name: &str) -> DynamicObject {
    let prompt = format!(
        "{name}: fix the flaky login test, then update the docs. {}",
        "Keep the change small and explain it in the PR description. ".repeat(16)
    );
    serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1alpha2"), "kind": "AgenticSession",
        "metadata": {"name": name, "namespace": ns, "labels": {"team": "bench"}},
        "spec": {
            "initialPrompt": prompt, "mainRepo": "api",
            "repos": [{"url": "https://github.com/acme/api.git", "branch": "main"},
                      {"url": "https://github.com/acme/docs.git", "branch": "main"}],
            "llmSettings": {"model": "claude-sonnet-4-6", "temperature": 0.7, "maxTokens": 4000},
            "interactive": false, "timeoutSeconds": 3600,
        },
    }))
    .expect("a session")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    NoWebhooks,
    EveryCall,
    MatchConditions,
    AgnhostEveryCall,
    AgnhostMatchConditions,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::NoWebhooks => "no webhooks",
            Setup::EveryCall => "product, every call",
            Setup::MatchConditions => "product, matchConditions",
            Setup::AgnhostEveryCall => "agnhost, every call",
            Setup::AgnhostMatchConditions => "agnhost, matchConditions",
        }
    }

    /// The `(mutate, validate)` calls the apiserver makes for one
    /// normalized create.
    fn expected_calls(self) -> (f64, f64) {
        match self {
            Setup::NoWebhooks => (0.0, 0.0),
            Setup::EveryCall | Setup::AgnhostEveryCall => (1.0, 1.0),
            Setup::MatchConditions | Setup::AgnhostMatchConditions => (0.0, 1.0),
        }
    }

    fn agnhost(self) -> bool {
        matches!(
            self,
            Setup::AgnhostEveryCall | Setup::AgnhostMatchConditions
        )
    }
}

/// `agnhost webhook` on 127.0.0.1, and its `(url, CA file)`.
fn start_agnhost(env: &Installed) -> Option<(Proc, String, PathBuf)> {
    if !agentic_webhook::testkit::loopback_only() {
        println!(
            "(agnhost set-ups skipped: agnhost listens on every interface; run the bench in a \
             network namespace of its own, as scripts/bench.sh does)"
        );
        return None;
    }
    let Ok(Some(bin)) = shared_binary("agnhost") else {
        println!("(agnhost set-ups skipped: no ../shared/kube/agnhost.xz)");
        return None;
    };
    let dir = env.cp.dir().join("agnhost");
    std::fs::create_dir_all(&dir).expect("agnhost dir");
    make_certs(&dir);
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["webhook", "--port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(dir.join("tls.crt"))
        .arg("--tls-private-key-file")
        .arg(dir.join("tls.key"));
    let proc = Proc::spawn(cmd, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "agnhost did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((
        proc,
        format!("https://127.0.0.1:{port}"),
        dir.join("ca.crt"),
    ))
}

/// The two webhook configurations as the product ships them, pointed at
/// `url` with every path `/custom-resource` (agnhost's decode-and-allow).
fn agnhost_configurations(url: &str, ca: &str, match_conditions: bool) -> Vec<u8> {
    let mut args = vec!["--ca-file", ca, "--url", url];
    if !match_conditions {
        args.push("--no-match-conditions");
    }
    let yaml = String::from_utf8(render(&args)).expect("UTF-8");
    let mut docs: Vec<Value> = serde_saphyr::from_multiple::<Value>(&yaml)
        .expect("YAML")
        .into_iter()
        .filter(|d| {
            d["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        })
        .collect();
    for d in &mut docs {
        for h in d["webhooks"].as_array_mut().into_iter().flatten() {
            h["clientConfig"]["url"] = json!(format!("{url}/custom-resource"));
        }
    }
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": docs})).expect("JSON")
}

fn install(env: &Installed, setup: Setup, agnhost: Option<&(Proc, String, PathBuf)>) {
    let cp = env.cp;
    match setup {
        Setup::AgnhostEveryCall | Setup::AgnhostMatchConditions => {
            let (_, url, ca) = agnhost.expect("agnhost running");
            let list = agnhost_configurations(
                url,
                ca.to_str().expect("UTF-8 path"),
                setup == Setup::AgnhostMatchConditions,
            );
            cp.kubectl_ok(
                &["apply", "--server-side", "--force-conflicts", "-f", "-"],
                Some(&list),
            );
        }
        Setup::NoWebhooks => {
            cp.kubectl_ok(
                &[
                    "delete",
                    "--ignore-not-found",
                    "mutatingwebhookconfiguration/agentic-webhook",
                    "validatingwebhookconfiguration/agentic-webhook",
                ],
                None,
            );
        }
        Setup::EveryCall | Setup::MatchConditions => {
            let ca = env.ca_file.to_str().expect("UTF-8 path");
            let mut args = vec!["--ca-file", ca, "--url", env.url.as_str()];
            if setup == Setup::EveryCall {
                args.push("--no-match-conditions");
            }
            let yaml = render(&args);
            cp.kubectl_ok(
                &["apply", "--server-side", "--force-conflicts", "-f", "-"],
                Some(&yaml),
            );
        }
    }
}

/// The apiserver's own count of calls to each of our two webhook names
/// (whoever serves them).
async fn apiserver_calls(client: &kube::Client) -> (f64, f64) {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(req).await.expect("/metrics");
    let count = |name: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("apiserver_admission_webhook_admission_duration_seconds_count{")
                    && l.contains(&format!("name=\"{name}\""))
            })
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    };
    (
        count("mutate.agenticsessions.vteam.ambient-code"),
        count("validate.agenticsessions.vteam.ambient-code"),
    )
}

/// Wait until a normalized create makes exactly the calls `setup` should,
/// to the server it should (the apiserver picks up webhook configurations
/// within about 2 s).
async fn confirm(env: &Installed, client: &kube::Client, ns: &str, setup: Setup) {
    let api = sessions_in(client, ns, "v1alpha2");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = ((f64::NAN, f64::NAN), (f64::NAN, f64::NAN));
    let ours_expected = if setup.agnhost() {
        (0.0, 0.0)
    } else {
        setup.expected_calls()
    };
    while Instant::now() < deadline {
        let (m, v) = (calls(env, "/mutate"), calls(env, "/validate"));
        let (am, av) = apiserver_calls(client).await;
        api.create(&dry, &session(ns, "probe"))
            .await
            .expect("probe create");
        let (am2, av2) = apiserver_calls(client).await;
        seen = (
            (am2 - am, av2 - av),
            (calls(env, "/mutate") - m, calls(env, "/validate") - v),
        );
        if seen == (setup.expected_calls(), ours_expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{setup:?}: a normalized create made (mutate, validate) calls (apiserver, ours) {seen:?}"
    );
}

struct Stats {
    median: Duration,
    p90: Duration,
    min: Duration,
    max: Duration,
}

fn stats(mut d: Vec<Duration>) -> Stats {
    d.sort();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
        min: d[0],
        max: d[d.len() - 1],
    }
}

/// `(create, label, spec)` latencies of `n` sessions written one at a time.
async fn measure(client: &kube::Client, ns: &str, tag: &str, n: usize) -> [Vec<Duration>; 3] {
    let api = sessions_in(client, ns, "v1alpha2");
    let mut out: [Vec<Duration>; 3] = Default::default();
    for i in 0..n {
        let name = format!("{tag}-{i}");
        let t = Instant::now();
        api.create(&PostParams::default(), &session(ns, &name))
            .await
            .expect("create");
        out[0].push(t.elapsed());
        let t = Instant::now();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"stage": "review"}}})),
        )
        .await
        .expect("label patch");
        out[1].push(t.elapsed());
        let t = Instant::now();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"displayName": format!("session {i}")}})),
        )
        .await
        .expect("spec patch");
        out[2].push(t.elapsed());
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    let n = writes();
    let Some(env) = installed() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = env.cp.client_as(&Who::admin()).await;
        let ns = env.cp.namespace(&client, "writes").await;
        println!(
            "write_latency: {n} sessions of ~1.5 KB per set-up, one write at a time; median (p90) [min–max], ms"
        );
        println!("| Set-up | create | label patch | spec patch |");
        println!("| --- | --- | --- | --- |");
        // Interleaved rounds, so drift on a shared machine hits every set-up.
        let agnhost = start_agnhost(env);
        let mut setups = vec![Setup::NoWebhooks, Setup::EveryCall, Setup::MatchConditions];
        if agnhost.is_some() {
            setups.extend([Setup::AgnhostEveryCall, Setup::AgnhostMatchConditions]);
        }
        let rounds = 3;
        let mut all: Vec<[Vec<Duration>; 3]> = vec![Default::default(); setups.len()];
        for round in 0..rounds {
            for (k, setup) in setups.iter().enumerate() {
                install(env, *setup, agnhost.as_ref());
                confirm(env, &client, &ns, *setup).await;
                // Warm the connections of this set-up before timing it.
                measure(&client, &ns, &format!("warm-{round}-{k}"), 3).await;
                let got = measure(&client, &ns, &format!("r{round}-{k}"), n.div_ceil(rounds)).await;
                for (into, from) in all[k].iter_mut().zip(got) {
                    into.extend(from);
                }
            }
        }
        for (setup, lat) in setups.iter().zip(all) {
            let cells: Vec<String> = lat
                .into_iter()
                .map(|d| {
                    let s = stats(d);
                    format!("{} ({}) [{}–{}]", ms(s.median), ms(s.p90), ms(s.min), ms(s.max))
                })
                .collect();
            println!("| {} | {} |", setup.label(), cells.join(" | "));
        }
        // Leave the product as shipped.
        install(env, Setup::MatchConditions, None);
    });
}
