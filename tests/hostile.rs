//! Hostile clients against the real server process. After each attack the
//! server must still answer a good review correctly, its memory must come
//! back near its baseline, and every bad request must have had a clear 4xx
//! or a well-formed denial: never a 5xx, never a silent hang-up.
//!
//! `HOSTILE_SOAK=1` multiplies the rounds (see docs/reliability.md).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentic_webhook::testkit::client::{Alpn, Connection};
use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn soak() -> usize {
    if std::env::var_os("HOSTILE_SOAK").is_some() {
        20
    } else {
        1
    }
}

/// The server under attack: heap trimmed soon after connections close, so
/// RSS is judged in seconds.
fn start(extra: &[&str]) -> Fixture {
    let mut args = vec!["--memory-trim-interval", "1s"];
    args.extend_from_slice(extra);
    self_signed(&args)
}

const GOOD: &str = "01-apply-v1alpha1-legacy.mutate.json";

/// A fresh connection gets the exact answer a good legacy CREATE deserves.
async fn still_answers(f: &Fixture) {
    let mut conn = connect(f.server.https, &f.ca, Alpn::Both).await;
    let body = fixture(GOOD);
    let uid = json(&body)["request"]["uid"].clone();
    let resp = conn
        .post("/mutate?timeout=10s", body)
        .await
        .unwrap_or_else(|e| panic!("good review after attack: {e}"));
    assert_eq!(resp.status, 200);
    let v = json(&resp.body);
    assert_eq!(v["response"]["uid"], uid);
    assert_eq!(v["response"]["allowed"], true);
    let patch = patch_of(&v).unwrap_or_else(|| panic!("legacy create lost its patch: {v}"));
    assert!(
        patch
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op["path"] == "/spec/initialPrompt")),
        "{patch}"
    );
    assert_eq!(http_get(f.server.probes, "/readyz").0, 200);
}

fn panics(f: &Fixture) -> f64 {
    let (_, text) = http_get(f.server.probes, "/metrics");
    metric(&text, "agentic_webhook_panics_total").unwrap_or(0.0)
}

/// RSS must come back to within `slack` of `baseline` (allocators keep some).
async fn settles(f: &Fixture, baseline: u64, slack: u64, what: &str) -> u64 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = f.server.rss_kib().unwrap_or(0);
        if now <= baseline + slack {
            return now;
        }
        if Instant::now() > end {
            panic!("{what}: RSS {now} KiB did not settle near baseline {baseline} KiB");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every JSON position of `v`, as pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(c, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// 200 with a well-formed review for the same uid, or a clear 4xx.
fn judge(path: &str, sent: &[u8], status: u16, body: &[u8], what: &str) -> bool {
    assert!(
        status == 200 || (400..500).contains(&status),
        "{what}: {path} answered {status}: {}",
        String::from_utf8_lossy(body)
    );
    if status != 200 {
        assert!(!body.is_empty(), "{what}: {status} without a reason");
        return false;
    }
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: 200 with a body that is not JSON ({e})"));
    let resp = &v["response"];
    if let Ok(sent) = serde_json::from_slice::<Value>(sent)
        && let Some(uid) = sent["request"]["uid"].as_str()
    {
        assert_eq!(resp["uid"], uid, "{what}: uid not echoed");
    }
    if path.starts_with("/convert") {
        assert!(
            matches!(
                resp["result"]["status"].as_str(),
                Some("Success" | "Failure")
            ),
            "{what}: {v}"
        );
    } else {
        assert!(resp["allowed"].is_boolean(), "{what}: {v}");
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_clear_answers_and_the_server_keeps_answering() {
    let f = start(&[]);
    let mut conn = connect(f.server.https, &f.ca, Alpn::Both).await;
    still_answers(&f).await;
    let baseline = f.server.rss_kib().unwrap_or(0);
    let mut tried = 0usize;
    let mut answered_200 = 0usize;

    let seeds = [
        ("/mutate", fixture(GOOD)),
        ("/validate", fixture("03-merge-patch-spec.validate.json")),
        (
            "/validate",
            fixture("05-status-patch-via-v1alpha1.validate.json"),
        ),
        ("/convert", fixture("07-get-list-v1alpha1.convert-01.json")),
    ];
    for (path, good) in &seeds {
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        // Truncated at many points.
        for cut in (0..good.len()).step_by((good.len() / 40).max(1)) {
            cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
        }
        // Invalid UTF-8 inside a string and outside one.
        let text = String::from_utf8_lossy(good).to_string();
        if let Some(i) = text.find("\"uid\":\"") {
            let mut b = good.clone();
            b.insert(i + 7, 0xff);
            cases.push(("invalid UTF-8 in a string".into(), b));
        }
        cases.push((
            "invalid UTF-8 between tokens".into(),
            [&b"{\xfe\xff"[..], &good[1..]].concat(),
        ));
        // Wrong JSON types at every position.
        let v: Value = serde_json::from_slice(good).unwrap_or_else(|e| panic!("{e}"));
        let mut ptrs = Vec::new();
        pointers(&v, String::new(), &mut ptrs);
        for p in ptrs.iter().filter(|p| !p.is_empty()) {
            for wrong in [
                json!(null),
                json!(7),
                json!("x"),
                json!([]),
                json!({}),
                json!(true),
            ] {
                let mut w = v.clone();
                if let Some(slot) = w.pointer_mut(p) {
                    if *slot == wrong {
                        continue;
                    }
                    *slot = wrong.clone();
                }
                cases.push((
                    format!("{p} = {wrong}"),
                    serde_json::to_vec(&w).expect("serializes"),
                ));
            }
        }
        for (what, body) in cases {
            let resp = conn
                .post(path, body.clone())
                .await
                .unwrap_or_else(|e| panic!("{path} {what}: connection failed: {e}"));
            tried += 1;
            answered_200 +=
                usize::from(judge(path, &body, resp.status.as_u16(), &resp.body, &what));
        }
    }
    assert!(tried > 1000, "only {tried} cases");
    assert!(answered_200 > 0 && answered_200 < tried);

    // 10,000-deep nesting, in the object and as the whole body.
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    for (what, body) in [
        (
            "deep object",
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"d","kind":{{"group":"vteam.ambient-code","version":"v1alpha2","kind":"AgenticSession"}},"operation":"CREATE","object":{deep}}}}}"#
            ),
        ),
        ("deep body", deep.clone()),
    ] {
        for path in ["/mutate", "/validate", "/convert"] {
            let resp = conn
                .post(path, body.clone())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            tried += 1;
            let answered = judge(
                path,
                body.as_bytes(),
                resp.status.as_u16(),
                &resp.body,
                what,
            );
            if what == "deep body" || path == "/convert" {
                assert_eq!(resp.status, 400, "{path} {what}");
            } else if path == "/validate" {
                // The object is not an object: a schema denial.
                assert!(answered);
                assert_eq!(
                    json(&resp.body)["response"]["allowed"],
                    false,
                    "{path} {what}"
                );
            }
        }
    }

    // A multi-megabyte prompt: read, judged, denied by V7 with a short message.
    let mut big: Value = fixture_json("02-apply-ssa-v1alpha2-modern.validate.json");
    big["request"]["object"]["spec"]["initialPrompt"] = json!("p".repeat(6 << 20));
    let resp = conn
        .post("/validate", serde_json::to_vec(&big).expect("serializes"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 200);
    let v = json(&resp.body);
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert_eq!(v["response"]["status"]["code"], 422);
    assert!(resp.body.len() < 64 * 1024, "the bad value is echoed whole");
    tried += 1;

    // Bodies exactly at and one byte over the limits.
    for (path, limit, seed) in [
        ("/mutate", 8usize << 20, fixture(GOOD)),
        (
            "/convert",
            64 << 20,
            fixture("07-get-list-v1alpha1.convert-01.json"),
        ),
    ] {
        let mut at = seed.clone();
        at.resize(limit, b' ');
        let resp = conn.post(path, at).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status, 200, "{path} at the limit");
        let mut over = seed;
        over.resize(limit + 1, b' ');
        let resp = conn
            .post(path, over)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status, 413, "{path} over the limit");
        tried += 2;
    }
    drop(conn);

    assert_eq!(panics(&f), 0.0);
    still_answers(&f).await;
    let after = settles(&f, baseline, 8 * 1024, "malformed bodies").await;
    eprintln!(
        "malformed bodies: {tried} requests, {answered_200} answered 200, RSS {baseline} -> {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocols_get_a_reason_not_a_silent_close() {
    let f = start(&[]);
    let body = fixture(GOOD);

    // Plaintext HTTP on the TLS port.
    let mut s = raw(f.server.https).await;
    let req = format!(
        "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(&body).await.unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&read_all(&mut s, Duration::from_secs(5)).await).to_string();
    assert!(text.starts_with("HTTP/1.0 400"), "{text}");
    assert!(text.contains("HTTP request to an HTTPS server"), "{text}");

    // Garbage bytes.
    for garbage in [
        &b"\x00\x01\x02\x03garbage"[..],
        b"\xff\xff\xff\xff",
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let mut s = raw(f.server.https).await;
        let _ = s.write_all(garbage).await;
        let out = read_all(&mut s, Duration::from_secs(12)).await;
        if garbage[0] == 0x16 {
            // A broken TLS record: rustls answers with a TLS alert (type 21).
            assert!(out.is_empty() || out[0] == 21, "{out:?}");
        } else {
            assert!(out.starts_with(b"HTTP/1.0 400"), "{out:?}");
        }
    }

    // HTTP/1.0 over TLS: answered, then closed.
    let mut t = tls_stream(f.server.https, &f.ca, &[b"http/1.1"]).await;
    let req = format!(
        "POST /mutate HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    t.write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    t.write_all(&body).await.unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&read_all(&mut t, Duration::from_secs(5)).await).to_string();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(text.contains("\"allowed\":true"), "{text}");

    assert_eq!(panics(&f), 0.0);
    still_answers(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_do_not_hold_the_server() {
    let f = start(&["--header-read-timeout", "2s", "--handshake-timeout", "2s"]);
    still_answers(&f).await;
    let baseline = f.server.rss_kib().unwrap_or(0);

    // Headers one byte a second: cut off by the header-read timeout.
    let mut slow = tls_stream(f.server.https, &f.ca, &[b"http/1.1"]).await;
    let started = Instant::now();
    let head = b"POST /mutate HTTP/1.1\r\nHost: x\r\n";
    let mut closed = false;
    for b in head {
        if slow.write_all(&[*b]).await.is_err() || slow.flush().await.is_err() {
            closed = true;
            break;
        }
        // Others are served meanwhile.
        if started.elapsed() < Duration::from_secs(1) {
            still_answers(&f).await;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "a one-byte-a-second client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A TCP connection that never starts TLS: dropped at the handshake timeout.
    let mut mute = raw(f.server.https).await;
    let out = read_all(&mut mute, Duration::from_secs(6)).await;
    assert!(out.is_empty());

    // A thousand idle TLS connections, then a good review.
    for round in 0..soak() {
        let mut idle = Vec::new();
        for _ in 0..1000 {
            idle.push(tls_stream(f.server.https, &f.ca, &[b"h2", b"http/1.1"]).await);
        }
        still_answers(&f).await;
        let held = f.server.rss_kib().unwrap_or(0);
        drop(idle);
        let after = settles(&f, baseline, 6 * 1024, "idle connections").await;
        eprintln!(
            "idle round {round}: RSS {baseline} KiB, with 1000 idle {held} KiB, after {after} KiB"
        );
    }
    assert_eq!(panics(&f), 0.0);
    still_answers(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_is_cut_off_and_others_are_served() {
    let f = start(&[]);
    still_answers(&f).await;
    let baseline = f.server.rss_kib().unwrap_or(0);
    let body = Bytes::from(fixture(GOOD));

    for _ in 0..soak() {
        let tls = tls_stream(f.server.https, &f.ca, &[b"h2"]).await;
        let (mut client, conn) = h2::client::handshake(tls)
            .await
            .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
        let driver = tokio::spawn(conn);
        let mut sent = 0usize;
        let mut refused = None;
        for _ in 0..20_000 {
            let ready =
                match tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        refused = Some(e.to_string());
                        break;
                    }
                    Err(_) => {
                        refused = Some("stalled".into());
                        break;
                    }
                };
            client = ready;
            let req = http::Request::post(format!("https://{}/mutate", f.server.https))
                .header("content-type", "application/json")
                .body(())
                .unwrap_or_else(|e| panic!("{e}"));
            match client.send_request(req, false) {
                Ok((_resp, mut stream)) => {
                    let _ = stream.send_data(body.slice(..64), false);
                    stream.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(e) => {
                    refused = Some(e.to_string());
                    break;
                }
            }
        }
        // The server either keeps up or ends the connection with a GOAWAY;
        // the attacker learns why either way.
        let outcome = tokio::time::timeout(Duration::from_secs(10), driver).await;
        eprintln!(
            "rapid reset: {sent} streams opened and reset; refused: {refused:?}; connection: {outcome:?}"
        );
        still_answers(&f).await;
    }
    assert_eq!(panics(&f), 0.0);
    let after = settles(&f, baseline, 6 * 1024, "rapid reset").await;
    eprintln!("rapid reset: RSS {baseline} -> {after} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_concurrency_limit_is_shed_with_429() {
    let f = start(&["--max-concurrent-reviews", "2"]);
    still_answers(&f).await;
    let body = Bytes::from(fixture("07-get-list-v1alpha1.convert-01.json"));
    let big = {
        // Slow enough reviews that a burst queues up: 300 objects.
        let mut v = fixture_json("07-get-list-v1alpha1.convert-01.json");
        let one = v["request"]["objects"][0].clone();
        v["request"]["objects"] = Value::Array(vec![one; 300]);
        Bytes::from(serde_json::to_vec(&v).expect("serializes"))
    };
    let base = connect(f.server.https, &f.ca, Alpn::H2).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c: Connection = base.share().unwrap_or_else(|| panic!("h2"));
        let b = if i % 2 == 0 {
            big.clone()
        } else {
            body.clone()
        };
        tasks.push(tokio::spawn(async move {
            c.post("/convert?timeout=10s", b)
                .await
                .map(|r| (r.status.as_u16(), r.headers.get("retry-after").is_some()))
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        match t.await.unwrap_or_else(|e| panic!("{e}")) {
            Ok((200, _)) => ok += 1,
            Ok((429, retry_after)) => {
                assert!(retry_after, "429 without Retry-After");
                shed += 1;
            }
            Ok((other, _)) => panic!("burst answered {other}"),
            Err(e) => panic!("burst request failed: {e}"),
        }
    }
    assert!(ok > 0, "nothing was served");
    let (_, text) = http_get(f.server.probes, "/metrics");
    let counted = metric(&text, "agentic_webhook_shed_requests_total").unwrap_or(0.0);
    assert_eq!(counted as usize, shed, "shed requests counted");
    eprintln!("burst of 200 with 2 slots: {ok} served, {shed} shed with 429");
    assert_eq!(panics(&f), 0.0);
    still_answers(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_accepted_request_and_exits_0() {
    let mut f = start(&["--shutdown-delay", "2s", "--shutdown-grace", "10s"]);
    still_answers(&f).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let base = connect(f.server.https, &f.ca, Alpn::H2).await;
    let body = Bytes::from(fixture("03-merge-patch-spec.validate.json"));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let mut c = base.share().unwrap_or_else(|| panic!("h2"));
        let (stop, body) = (stop.clone(), body.clone());
        let (addr, ca) = (f.server.https, f.ca.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut other) = (0usize, Vec::new());
            // Like the apiserver: stop sending once endpoints drop the pod
            // (readiness false), which --shutdown-delay leaves time for.
            // A request the server never processed (not sent, or refused by
            // its GOAWAY) goes out again on a new connection, as Go's
            // transport does.
            let mut resent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut tries = 0;
                loop {
                    match c.post("/validate?timeout=10s", body.clone()).await {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => other.push(format!("HTTP {}", r.status)),
                        Err(e) if e.never_processed() && tries < 5 => {
                            tries += 1;
                            resent += 1;
                            c = connect(addr, &ca, Alpn::H2).await;
                            continue;
                        }
                        Err(e) => other.push(format!("{e:?}")),
                    }
                    break;
                }
            }
            (ok, other, resent)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    f.server.signal("TERM");
    let probes = f.server.probes;
    tokio::task::spawn_blocking(move || {
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end && http_get(probes, "/readyz").0 != 503 {
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut answered, mut lost, mut resent) = (0, Vec::new(), 0);
    for w in workers {
        let (ok, other, again) = w.await.unwrap_or_else(|e| panic!("{e}"));
        answered += ok;
        lost.extend(other);
        resent += again;
    }
    let status = f
        .server
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("did not exit"));
    eprintln!(
        "SIGTERM under load: {answered} answered, {} lost, {resent} sent again (refused by GOAWAY)",
        lost.len()
    );
    assert!(lost.is_empty(), "requests lost: {lost:?}");
    assert!(
        answered > 100,
        "load too light to mean anything: {answered}"
    );
    assert_eq!(status.code(), Some(0));
}

/// `curl` posting `body_bytes` of `content_type` to `path`: (HTTP code, exit code).
fn curl_post(
    f: &Fixture,
    proto: &str,
    content_type: &str,
    body: &std::path::Path,
    path: &str,
) -> (String, Option<i32>) {
    let ca = f.dir.path().join("ca.crt");
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            proto,
            "--cacert",
        ])
        .arg(&ca)
        .args([
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(format!("https://{}{path}", f.server.https))
        .output()
        .unwrap_or_else(|e| panic!("curl is needed for this test: {e}"));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

/// A refusal sent before the body is read (415, 413) reaches a client that
/// is still uploading, over HTTP/2 and HTTP/1.1, as curl sees it. (Before
/// the body was drained, curl over HTTP/2 reported `(92) Stream error` for
/// every upload larger than its 64 KiB window.)
#[test]
fn an_early_answer_reaches_a_client_still_uploading() {
    let f = start(&["--max-conversion-body", "1048576"]);
    let two_mib = f.dir.path().join("two-mib");
    std::fs::write(&two_mib, vec![b'a'; 2 << 20]).unwrap_or_else(|e| panic!("{e}"));
    for (proto, tries) in [("--http2", 50), ("--http1.1", 10)] {
        for i in 0..tries {
            let got = curl_post(&f, proto, "text/plain", &two_mib, "/validate");
            assert_eq!(got, ("415".into(), Some(0)), "{proto} try {i}");
        }
        let got = curl_post(&f, proto, "application/json", &two_mib, "/convert");
        assert_eq!(
            got,
            ("413".into(), Some(0)),
            "{proto}: a body over the limit"
        );
    }
    assert_eq!(panics(&f), 0.0);
}

fn in_flight(f: &Fixture, webhook: &str) -> f64 {
    let (_, text) = http_get(f.server.probes, "/metrics");
    metric(
        &text,
        &format!("controller_runtime_webhook_requests_in_flight{{webhook=\"{webhook}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// Streams reset by the client while the server holds them leave no request
/// counted as in flight. With one review at a time, the first stream waits
/// for its body and the others wait for a slot: hyper drops those at the
/// reset, mid-`.await`, which is what the gauge's guard is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_streams_leave_nothing_in_flight() {
    let f = start(&["--max-concurrent-reviews", "1"]);
    let tls = tls_stream(f.server.https, &f.ca, &[b"h2"]).await;
    let (client, conn) = h2::client::handshake(tls)
        .await
        .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
    tokio::spawn(conn);
    let mut client = client;
    let mut streams = Vec::new();
    for _ in 0..20 {
        client = client
            .ready()
            .await
            .unwrap_or_else(|e| panic!("h2 ready: {e}"));
        let req = http::Request::post(format!("https://{}/convert?timeout=20s", f.server.https))
            .header("content-type", "application/json")
            .header("content-length", "1000000")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"));
        let (_resp, mut stream) = client
            .send_request(req, false)
            .unwrap_or_else(|e| panic!("send: {e}"));
        let _ = stream.send_data(Bytes::from_static(b"{\"apiVersion\":"), false);
        streams.push(stream);
    }
    // All twenty are in flight: one reading its body, nineteen queued.
    let end = Instant::now() + Duration::from_secs(10);
    while in_flight(&f, "/convert") != 20.0 {
        assert!(
            Instant::now() < end,
            "in flight: {}",
            in_flight(&f, "/convert")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in &mut streams {
        s.send_reset(h2::Reason::CANCEL);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while in_flight(&f, "/convert") != 0.0 {
        assert!(
            Instant::now() < end,
            "cancelled requests still counted in flight: {}",
            in_flight(&f, "/convert")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_answers(&f).await;
}

/// A legacy CREATE whose prompt makes the body `size` bytes (the costliest
/// string shape: the prompt also goes into the patch).
fn long_prompt_review(size: usize) -> Bytes {
    let mut v = fixture_json(GOOD);
    let base = serde_json::to_vec(&v).expect("serializes").len();
    v["request"]["object"]["spec"]["prompt"] = json!("x".repeat(size.saturating_sub(base + 64)));
    Bytes::from(serde_json::to_vec(&v).expect("serializes"))
}

/// A CREATE with `size` bytes of tiny environment variables (the costliest
/// shape per byte: a map entry for every ten bytes).
fn value_dense_review(size: usize) -> Bytes {
    let mut v = fixture_json("02-apply-ssa-v1alpha2-modern.validate.json");
    let mut n = size / 12;
    loop {
        let vars: serde_json::Map<String, Value> =
            (0..n).map(|i| (format!("K{i}"), json!("v"))).collect();
        v["request"]["object"]["spec"]["environmentVariables"] = Value::Object(vars);
        let body = serde_json::to_vec(&v).expect("serializes");
        if body.len() <= size {
            return Bytes::from(body);
        }
        n = n * 97 / 100;
    }
}

/// A list conversion of `size` bytes.
fn large_conversion(size: usize) -> (Bytes, usize) {
    let mut v = fixture_json("07-get-list-v1alpha1.convert-01.json");
    let one = v["request"]["objects"][0].clone();
    let each = serde_json::to_vec(&one).expect("serializes").len() + 1;
    let n = size.saturating_sub(4096) / each;
    v["request"]["objects"] = Value::Array(vec![one; n]);
    (Bytes::from(serde_json::to_vec(&v).expect("serializes")), n)
}

/// Under a 128 MiB memory limit (read from a cgroup file, as in a pod), the
/// largest bodies the server accepts, fired together, are all answered and
/// the peak RSS stays under the limit. The budget refuses what it cannot
/// afford (413 if never, 429 if not now) instead of allocating it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_accepted_bodies_at_once_stay_under_the_memory_limit() {
    let cgroup = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let limit_kib: u64 = 128 * 1024;
    std::fs::write(
        cgroup.path().join("memory.max"),
        format!("{}\n", limit_kib * 1024),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let root = cgroup.path().display().to_string();
    let f = start(&["--cgroup-root", &root]);
    let (_, text) = http_get(f.server.probes, "/metrics");
    let limit = |name: &str| {
        metric(&text, &format!("agentic_webhook_limit{{limit=\"{name}\"}}"))
            .unwrap_or_else(|| panic!("no {name} limit in {text}")) as usize
    };
    assert_eq!(limit("memory_bytes"), (limit_kib * 1024) as usize);
    let conversion_limit = limit("conversion_body_bytes");
    let admission_limit = limit("admission_body_bytes");
    let (conversion, objects) = large_conversion(conversion_limit);
    let bodies = [
        ("/convert", conversion),
        ("/mutate", long_prompt_review(admission_limit)),
        ("/validate", value_dense_review(admission_limit)),
    ];
    for (path, b) in &bodies {
        let cap = if *path == "/convert" {
            conversion_limit
        } else {
            admission_limit
        };
        assert!(
            b.len() <= cap && b.len() > cap * 9 / 10,
            "{path}: {} of {cap}",
            b.len()
        );
    }
    let base = connect(f.server.https, &f.ca, Alpn::H2).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        for (path, body) in &bodies {
            let mut c: Connection = base.share().unwrap_or_else(|| panic!("h2"));
            let (path, body) = (*path, body.clone());
            tasks.push(tokio::spawn(async move {
                let r = c.post(&format!("{path}?timeout=30s"), body).await;
                (path, r.map(|r| (r.status.as_u16(), r.body)))
            }));
        }
    }
    let mut seen = std::collections::BTreeMap::<(&str, u16), usize>::new();
    for t in tasks {
        let (path, r) = t.await.unwrap_or_else(|e| panic!("{e}"));
        let (status, body) = r.unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
        assert!(matches!(status, 200 | 413 | 429), "{path}: {status}");
        if path == "/convert" && status == 200 {
            let v = json(&body);
            assert_eq!(
                v["response"]["convertedObjects"].as_array().map(Vec::len),
                Some(objects)
            );
        }
        *seen.entry((path, status)).or_default() += 1;
    }
    let peak = f.server.peak_rss_kib().unwrap_or(u64::MAX);
    eprintln!(
        "memory limit {limit_kib} KiB: conversion body {conversion_limit} B, admission body \
         {admission_limit} B, 4 of each at once: {seen:?}; peak RSS {peak} KiB"
    );
    assert!(
        peak < limit_kib,
        "peak RSS {peak} KiB over the {limit_kib} KiB limit"
    );
    // The budget serves what it can afford, not nothing.
    assert!(
        seen.get(&("/convert", 200)).is_some_and(|n| *n >= 1),
        "{seen:?}"
    );
    assert!(
        seen.get(&("/mutate", 200)).is_some_and(|n| *n >= 1),
        "{seen:?}"
    );
    assert_eq!(panics(&f), 0.0);
    still_answers(&f).await;
}
