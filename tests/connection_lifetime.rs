//! How connections end, against the real server process: retired by age
//! (`--max-connection-age`) and at shutdown, always by telling the client
//! first (HTTP/1.1 `Connection: close` on a response, HTTP/2 GOAWAY), never
//! by closing a kept-alive connection the client may be sending on.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

type Tls = TlsStream<tokio::net::TcpStream>;

fn start(extra: &[&str]) -> Fixture {
    self_signed(extra)
}

const REVIEW: &str = "03-merge-patch-spec.validate.json";

/// One HTTP/1.1 exchange on a kept-alive connection: the response head
/// (lower-cased) and its body.
async fn exchange(tls: &mut Tls, addr: std::net::SocketAddr) -> (String, Vec<u8>) {
    let body = fixture(REVIEW);
    let head = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    tls.write_all(&body)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    tls.flush().await.unwrap_or_else(|e| panic!("flush: {e}"));
    read_one_response(tls).await
}

async fn read_one_response(tls: &mut Tls) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no content-length: {head}"));
            while buf.len() < end + 4 + len {
                read_more(tls, &mut buf, &mut chunk, deadline).await;
            }
            return (head, buf[end + 4..end + 4 + len].to_vec());
        }
        read_more(tls, &mut buf, &mut chunk, deadline).await;
    }
}

async fn read_more(tls: &mut Tls, buf: &mut Vec<u8>, chunk: &mut [u8], deadline: Instant) {
    let n = tokio::time::timeout_at(deadline.into(), tls.read(chunk))
        .await
        .unwrap_or_else(|_| panic!("no response within 10s"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert!(
        n > 0,
        "connection closed mid-response: {}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// The server closed the connection within `limit` (EOF or reset, no bytes).
async fn closed_within(tls: &mut Tls, limit: Duration) -> bool {
    let mut one = [0u8; 1];
    match tokio::time::timeout(limit, tls.read(&mut one)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes on an idle connection"),
        Err(_) => false,
    }
}

fn says_close(head: &str) -> bool {
    head.lines().any(|l| l.trim() == "connection: close")
}

fn metrics_of(f: &Fixture) -> String {
    http_get(f.server.probes, "/metrics").1
}

/// The server's own count: one connection of `protocol`, retired by age.
fn one_connection_retired_by_age(f: &Fixture, protocol: &str) {
    let m = metrics_of(f);
    let series = |s: &str| metric(&m, s);
    assert_eq!(
        series("agentic_webhook_connections_retired_total{reason=\"age\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        series(&format!(
            "agentic_webhook_connections_total{{protocol=\"{protocol}\"}}"
        )),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn an_http11_connection_past_its_age_is_told_on_its_next_response_never_cut_while_idle() {
    let f = start(&["--max-connection-age", "1s"]);
    let addr = f.server.https;
    let mut tls = tls_stream(addr, &f.ca, &[b"http/1.1"]).await;
    let (head, _) = exchange(&mut tls, addr).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!says_close(&head), "told to close before its age: {head}");

    // Past the age (1 s + at most 10 % jitter) the idle connection stays
    // open: the client may be writing its next request at this instant.
    assert!(
        !closed_within(&mut tls, Duration::from_millis(1500)).await,
        "an idle kept-alive connection was closed under its client"
    );
    let (head, body) = exchange(&mut tls, addr).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(json(&body)["response"]["allowed"].is_boolean());
    assert!(
        says_close(&head),
        "no Connection: close after the age: {head}"
    );
    assert!(
        closed_within(&mut tls, Duration::from_secs(2)).await,
        "the connection stayed open after Connection: close"
    );

    one_connection_retired_by_age(&f, "http/1.1");
}

#[tokio::test]
async fn without_an_age_a_kept_alive_connection_is_never_told_to_close() {
    let f = start(&["--max-connection-age", "0"]);
    let addr = f.server.https;
    let mut tls = tls_stream(addr, &f.ca, &[b"http/1.1"]).await;
    for _ in 0..3 {
        let (head, _) = exchange(&mut tls, addr).await;
        assert!(!says_close(&head), "{head}");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        metric(
            &metrics_of(&f),
            "agentic_webhook_connections_retired_total{reason=\"age\"}"
        ),
        Some(0.0)
    );
}

/// An h2 client on its own TLS stream, driven in the background; the
/// driver's result says how the connection ended.
async fn h2_client(
    f: &Fixture,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = tls_stream(f.server.https, &f.ca, &[b"h2"]).await;
    let (client, conn) = h2::client::handshake(tls)
        .await
        .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
    (client, tokio::spawn(conn))
}

fn h2_post(addr: std::net::SocketAddr) -> http::Request<()> {
    http::Request::post(format!("https://{addr}/validate?timeout=20s"))
        .header("content-type", "application/json")
        .body(())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn an_http2_connection_past_its_age_gets_goaway_and_its_open_stream_still_finishes() {
    let f = start(&["--max-connection-age", "1s"]);
    let (client, driver) = h2_client(&f).await;
    let mut client = client.ready().await.unwrap_or_else(|e| panic!("{e}"));
    // A request whose body is half sent when the age passes.
    let body = Bytes::from(fixture(REVIEW));
    let (resp, mut stream) = client
        .send_request(h2_post(f.server.https), false)
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .send_data(body.slice(..body.len() / 2), false)
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(1600)).await;

    // GOAWAY arrived: the client may open no new stream on this connection.
    let refused = match client.clone().ready().await {
        Err(e) => true.then_some(e.to_string()),
        Ok(mut c) => c
            .send_request(h2_post(f.server.https), true)
            .err()
            .map(|e| e.to_string()),
    };
    assert!(refused.is_some(), "a new stream was accepted after the age");

    stream
        .send_data(body.slice(body.len() / 2..), true)
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = resp
        .await
        .unwrap_or_else(|e| panic!("in-flight stream lost: {e}"));
    assert_eq!(resp.status(), 200);
    let mut data = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = data.data().await {
        got.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("{e}")));
    }
    assert!(json(&got)["response"]["allowed"].is_boolean());
    // With its last stream done, the connection ends cleanly.
    let ended = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .unwrap_or_else(|_| panic!("connection still open after GOAWAY and its last stream"));
    assert!(
        matches!(ended, Ok(Ok(()))),
        "connection ended with {ended:?}"
    );
    one_connection_retired_by_age(&f, "h2");
}

#[tokio::test]
async fn a_request_still_running_past_the_age_grace_is_cut_and_counted() {
    let f = start(&[
        "--max-connection-age",
        "500ms",
        "--max-connection-age-grace",
        "1s",
    ]);
    let addr = f.server.https;
    // Headers and half a body: the handler is waiting for the rest.
    let mut tls = tls_stream(addr, &f.ca, &[b"http/1.1"]).await;
    let body = fixture(REVIEW);
    let head = format!(
        "POST /validate?timeout=30s HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tls.write_all(&body[..body.len() / 2])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tls.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    assert!(
        closed_within(&mut tls, Duration::from_secs(5)).await,
        "a request past age + grace was never cut"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1300),
        "cut before age + grace: {:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(
            &metrics_of(&f),
            "agentic_webhook_connections_forced_closed_total"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn sigterm_tells_every_connection_to_leave_and_closes_idle_ones_only_after_the_delay() {
    let mut f = start(&["--shutdown-delay", "2s", "--max-connection-age", "0"]);
    let addr = f.server.https;
    let mut busy = tls_stream(addr, &f.ca, &[b"http/1.1"]).await;
    let mut idle = tls_stream(addr, &f.ca, &[b"http/1.1"]).await;
    let (head, _) = exchange(&mut busy, addr).await;
    assert!(!says_close(&head));
    let (head, _) = exchange(&mut idle, addr).await;
    assert!(!says_close(&head));
    let (h2, h2_driver) = h2_client(&f).await;
    let h2 = h2.ready().await.unwrap_or_else(|e| panic!("{e}"));

    f.server.signal("TERM");
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(http_get(f.server.probes, "/readyz").0, 503);

    // HTTP/2: GOAWAY at once; the connection ends without new streams.
    let ended = tokio::time::timeout(Duration::from_secs(2), h2_driver)
        .await
        .unwrap_or_else(|_| panic!("no GOAWAY within 2s of SIGTERM"));
    assert!(matches!(ended, Ok(Ok(()))), "h2 ended with {ended:?}");
    drop(h2);

    // HTTP/1.1 in use during the delay: answered, and told to close.
    let (head, body) = exchange(&mut busy, addr).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(json(&body)["response"]["allowed"].is_boolean());
    assert!(says_close(&head), "{head}");
    assert!(closed_within(&mut busy, Duration::from_secs(1)).await);

    // HTTP/1.1 idle: left open through the delay, since its client may
    // pick it at any moment; closed once the listener has closed and the
    // connection stayed quiet.
    let open_until = signalled + Duration::from_millis(1900);
    assert!(
        !closed_within(
            &mut idle,
            open_until.saturating_duration_since(Instant::now())
        )
        .await,
        "an idle connection was closed during the shutdown delay"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "idle connection not closed after the delay"
    );
    let status = f
        .server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("did not exit"));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_connection_opened_during_the_shutdown_delay_is_answered_and_told_to_close() {
    let mut f = start(&["--shutdown-delay", "2s"]);
    let addr = f.server.https;
    f.server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = tls_stream(addr, &f.ca, &[b"http/1.1"]).await;
    let (head, _) = exchange(&mut late, addr).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(says_close(&head), "{head}");
    let m = metrics_of(&f);
    assert_eq!(
        metric(
            &m,
            "agentic_webhook_connections_retired_total{reason=\"shutdown\"}"
        ),
        Some(1.0),
        "{m}"
    );
    let status = f
        .server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("did not exit"));
    assert_eq!(status.code(), Some(0));
}
