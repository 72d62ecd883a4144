//! The real binary over real TLS: envelopes, limits, probes, metrics,
//! certificate reload, TLS knobs and graceful shutdown.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use agentic_webhook::certs;
use agentic_webhook::testkit::client::{Alpn, Connection, Tls};
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn serve_files(dir: &Path, extra: &[&str]) -> Server {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

#[tokio::test]
async fn uid_is_echoed_over_http2_and_http11_for_every_endpoint() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let server = serve_files(dir.path(), &[]);
    for (alpn, want) in [
        (Alpn::Both, b"h2".as_slice()),
        (Alpn::Http1, b"http/1.1".as_slice()),
    ] {
        let mut conn = connect(server.https, &ca, alpn).await;
        assert_eq!(conn.alpn.as_deref(), Some(want));
        for (path, file, kind) in [
            (
                "/mutate?timeout=5s",
                "01-apply-v1alpha1-legacy.mutate.json",
                "AdmissionReview",
            ),
            (
                "/validate?timeout=5s",
                "02-apply-ssa-v1alpha2-modern.validate.json",
                "AdmissionReview",
            ),
            (
                "/convert?timeout=30s",
                "01-apply-v1alpha1-legacy.convert-01.json",
                "ConversionReview",
            ),
        ] {
            let body = fixture(file);
            let sent = json(&body);
            let resp = conn
                .post(path, body)
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(resp.status, 200, "{path}");
            assert_eq!(resp.headers["content-type"], "application/json");
            let got = json(&resp.body);
            assert_eq!(got["kind"], kind);
            assert_eq!(got["apiVersion"], sent["apiVersion"]);
            assert_eq!(got["response"]["uid"], sent["request"]["uid"], "{path}");
        }
    }
}

#[tokio::test]
async fn v1beta1_reviews_are_answered_in_v1beta1() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let server = serve_files(dir.path(), &[]);
    let mut conn = connect(server.https, &ca, Alpn::Both).await;
    let mut review = fixture_json("06-create-dry-run.validate.json");
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let resp = conn
        .post("/validate", review.to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json(&resp.body)["apiVersion"], "admission.k8s.io/v1beta1");
    let mut conv = fixture_json("07-get-single-v1alpha1.convert.json");
    conv["apiVersion"] = json!("apiextensions.k8s.io/v1beta1");
    let resp = conn
        .post("/convert", conv.to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = json(&resp.body);
    assert_eq!(got["apiVersion"], "apiextensions.k8s.io/v1beta1");
    assert_eq!(got["response"]["result"]["status"], "Success");
}

#[tokio::test]
async fn every_malformed_shape_gets_400_with_a_plain_message() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let server = serve_files(dir.path(), &[]);
    let mut conn = connect(server.https, &ca, Alpn::Both).await;
    let admission_cases = [
        ("not json", "not valid JSON"),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "has no request",
        ),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"ConversionReview","request":{}}"#,
            "kind must be AdmissionReview",
        ),
        (
            r#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{}}"#,
            "apiVersion must be",
        ),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#,
            "has no uid",
        ),
        ("[1,2]", "expected a JSON object"),
    ];
    for path in ["/mutate", "/validate"] {
        for (body, want) in admission_cases {
            let resp = conn
                .post(path, body)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status, 400, "{path} {body}");
            assert!(
                resp.headers["content-type"]
                    .to_str()
                    .unwrap_or("")
                    .starts_with("text/plain")
            );
            let text = String::from_utf8_lossy(&resp.body);
            assert!(text.contains(want), "{path} {body}: {text}");
        }
    }
    for (body, want) in [
        ("{", "not valid JSON"),
        (
            r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview"}"#,
            "has no request",
        ),
        (
            r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}"#,
            "kind must be ConversionReview",
        ),
        (
            r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{}}"#,
            "has no uid",
        ),
    ] {
        let resp = conn
            .post("/convert", body)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status, 400, "{body}");
        assert!(String::from_utf8_lossy(&resp.body).contains(want), "{body}");
    }
}

#[tokio::test]
async fn bodies_over_the_limits_get_413() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let server = serve_files(dir.path(), &[]);
    let mut conn = connect(server.https, &ca, Alpn::Both).await;
    let over_admission = vec![b' '; (8 << 20) + 1];
    for path in ["/mutate", "/validate"] {
        let resp = conn
            .post(path, over_admission.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status, 413, "{path}");
    }
    // The same size is fine for conversion (64 MiB limit): it is read and judged.
    let resp = conn
        .post("/convert", over_admission)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 400);
    let over_conversion = vec![b' '; (64 << 20) + 1];
    let resp = conn
        .post("/convert", over_conversion)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 413);
}

#[tokio::test]
async fn probes_and_metrics() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let server = serve_files(dir.path(), &[]);
    assert_eq!(
        http_get(server.probes, "/healthz"),
        (200, "ok\n".to_string())
    );
    assert_eq!(
        http_get(server.probes, "/readyz"),
        (200, "ok\n".to_string())
    );
    let mut conn = connect(server.https, &ca, Alpn::Both).await;
    for _ in 0..3 {
        let resp = conn
            .post("/mutate", fixture("01-apply-v1alpha1-legacy.mutate.json"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status, 200);
    }
    let resp = conn
        .post("/validate", fixture("04-status-patch.validate.json"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json(&resp.body)["response"]["allowed"], false);
    let (code, text) = http_get(server.probes, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        metric(
            &text,
            r#"controller_runtime_webhook_requests_total{webhook="/mutate",code="200"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"controller_runtime_webhook_latency_seconds_count{webhook="/mutate"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"controller_runtime_webhook_requests_in_flight{webhook="/mutate"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"agentic_webhook_admission_requests_total{webhook="/mutate",operation="CREATE",result="patched"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"agentic_webhook_denials_total{rule="V17",enforcement="deny"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&text, "agentic_webhook_panics_total"), Some(0.0));
    let cert = read(&dir.path().join("tls.crt"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert).unwrap_or_else(|e| panic!("{e}"));
    let parsed = pem.parse_x509().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        metric(
            &text,
            "agentic_webhook_certificate_expiry_timestamp_seconds"
        ),
        Some(parsed.validity().not_after.timestamp() as f64)
    );
}

/// Replace `tls.crt`/`tls.key` in `dir` with a fresh pair from `src`, atomically.
fn swap_pair(src: &Path, dir: &Path) {
    for f in ["tls.crt", "tls.key"] {
        let tmp = dir.join(format!(".{f}.tmp"));
        std::fs::copy(src.join(f), &tmp).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&tmp, dir.join(f)).unwrap_or_else(|e| panic!("{e}"));
    }
}

async fn serial_of_new_connection(addr: std::net::SocketAddr, tls: &Tls) -> String {
    Connection::connect(addr, tls, None)
        .await
        .map(|c| c.peer_serial)
        .unwrap_or_default()
}

async fn wait_for_serial(
    addr: std::net::SocketAddr,
    tls: &Tls,
    want: &str,
    within: Duration,
) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if serial_of_new_connection(addr, tls).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn serial_of_file(path: &Path) -> String {
    let pem = read(path);
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
    let cert = pem.parse_x509().unwrap_or_else(|e| panic!("{e}"));
    agentic_webhook::certs::serving::hex(cert.raw_serial())
}

#[tokio::test]
async fn a_swapped_certificate_is_served_to_new_connections_without_dropping_old_ones() {
    let live = tempdir();
    let next = tempdir();
    make_certs(live.path());
    // The next pair must chain to the same CA for the client to trust both.
    let ca_pem = certs::CaPem {
        cert_pem: String::from_utf8_lossy(&read(&live.path().join("ca.crt"))).to_string(),
        key_pem: String::from_utf8_lossy(&read(&live.path().join("ca.key"))).to_string(),
    };
    let pair = certs::issue_serving(
        &ca_pem,
        &[],
        &["127.0.0.1"
            .parse()
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))],
        Duration::from_secs(86_400),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    certs::write_dir(next.path(), &ca_pem, &pair).unwrap_or_else(|e| panic!("{e}"));

    let ca = read(&live.path().join("ca.crt"));
    let server = serve_files(live.path(), &["--cert-poll-interval", "1s"]);
    let tls = tls(&ca, Alpn::Both);
    let old_serial = serial_of_file(&live.path().join("tls.crt"));
    let new_serial = serial_of_file(&next.path().join("tls.crt"));
    let mut old_conn = Connection::connect(server.https, &tls, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(old_conn.peer_serial, old_serial);

    swap_pair(next.path(), live.path());
    assert!(
        wait_for_serial(server.https, &tls, &new_serial, Duration::from_secs(10)).await,
        "new connections did not get the new certificate within 10 s"
    );
    // The connection opened before the swap still works.
    let resp = old_conn
        .post(
            "/validate",
            fixture("02-apply-ssa-v1alpha2-modern.validate.json"),
        )
        .await
        .unwrap_or_else(|e| panic!("old connection dropped: {e}"));
    assert_eq!(resp.status, 200);
    let (_, text) = http_get(server.probes, "/metrics");
    assert_eq!(
        metric(
            &text,
            r#"agentic_webhook_certificate_reloads_total{result="success"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_kubelet_style_symlink_rotation_is_picked_up() {
    // The kubelet's atomic writer: files are symlinks into `..data`, itself a
    // symlink to a timestamped directory that is swapped by rename.
    let root = tempdir();
    let r = root.path();
    let v1 = r.join("..2026_11_23_v1");
    let v2 = r.join("..2026_11_23_v2");
    make_certs(&v1);
    std::fs::create_dir_all(&v2).unwrap_or_else(|e| panic!("{e}"));
    let ca_pem = certs::CaPem {
        cert_pem: String::from_utf8_lossy(&read(&v1.join("ca.crt"))).to_string(),
        key_pem: String::from_utf8_lossy(&read(&v1.join("ca.key"))).to_string(),
    };
    let pair = certs::issue_serving(
        &ca_pem,
        &[],
        &[std::net::IpAddr::from([127, 0, 0, 1])],
        Duration::from_secs(86_400),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    certs::write_dir(&v2, &ca_pem, &pair).unwrap_or_else(|e| panic!("{e}"));
    let link = |target: &str, name: &str| {
        std::os::unix::fs::symlink(target, r.join(name)).unwrap_or_else(|e| panic!("{e}"));
    };
    link("..2026_11_23_v1", "..data");
    link("..data/tls.crt", "tls.crt");
    link("..data/tls.key", "tls.key");

    // Poll rarely, so the directory watch is what must notice.
    let server = serve_files(r, &["--cert-poll-interval", "1h"]);
    let ca = read(&v1.join("ca.crt"));
    let tls = tls(&ca, Alpn::Both);
    assert_eq!(
        serial_of_new_connection(server.https, &tls).await,
        serial_of_file(&v1.join("tls.crt"))
    );

    std::os::unix::fs::symlink("..2026_11_23_v2", r.join("..data_tmp"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(r.join("..data_tmp"), r.join("..data")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wait_for_serial(
            server.https,
            &tls,
            &serial_of_file(&v2.join("tls.crt")),
            Duration::from_secs(10)
        )
        .await,
        "symlink swap not picked up"
    );
}

#[tokio::test]
async fn a_broken_or_mismatched_new_pair_keeps_the_old_one() {
    let live = tempdir();
    let other = tempdir();
    make_certs(live.path());
    make_certs(other.path());
    let ca = read(&live.path().join("ca.crt"));
    let server = serve_files(live.path(), &["--cert-poll-interval", "1s"]);
    let tls = tls(&ca, Alpn::Both);
    let serial = serial_of_file(&live.path().join("tls.crt"));

    // A key that belongs to another certificate.
    std::fs::copy(other.path().join("tls.key"), live.path().join("tls.key"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        server.wait_log(
            |l| l["message"]
                .as_str()
                .is_some_and(|m| m.contains("reload failed")),
            Duration::from_secs(10)
        ),
        "no reload failure logged: {:?}",
        server.logs()
    );
    assert_eq!(serial_of_new_connection(server.https, &tls).await, serial);

    // A truncated certificate.
    std::fs::write(
        live.path().join("tls.crt"),
        b"-----BEGIN CERTIFICATE-----\nMIIB",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(serial_of_new_connection(server.https, &tls).await, serial);

    // Deleted files.
    let _ = std::fs::remove_file(live.path().join("tls.crt"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(serial_of_new_connection(server.https, &tls).await, serial);

    let (_, text) = http_get(server.probes, "/metrics");
    let failures = metric(
        &text,
        r#"agentic_webhook_certificate_reloads_total{result="failure"}"#,
    )
    .unwrap_or(0.0);
    assert!(failures >= 3.0, "failures counted: {failures}");
    assert_eq!(http_get(server.probes, "/readyz").0, 200);
}

#[tokio::test]
async fn disable_http2_negotiates_http11() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let server = serve_files(dir.path(), &["--disable-http2"]);
    let mut conn = connect(server.https, &ca, Alpn::Both).await;
    assert_eq!(conn.alpn.as_deref(), Some(b"http/1.1".as_slice()));
    let resp = conn
        .post("/mutate", fixture("10-create-mutated.mutate.json"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 200);
    // A client that insists on h2 is refused at the handshake.
    let h2_only = Tls::new(&ca, Alpn::H2, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        Connection::connect(server.https, &h2_only, None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn tls_min_version_13_refuses_tls12_clients() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let server = serve_files(dir.path(), &["--tls-min-version", "1.3"]);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca).flatten() {
        let _ = roots.add(c);
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap_or_else(|e| panic!("{e}"))
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.https)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let name = rustls_pki_types::ServerName::IpAddress(server.https.ip().into());
    let res = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await;
    assert!(res.is_err(), "TLS 1.2 handshake should fail");
    // TLS 1.3 works.
    connect(server.https, &ca, Alpn::Both).await;
}

use rustls_pki_types::pem::PemObject as _;

#[tokio::test]
async fn client_ca_requires_a_verified_client_certificate() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca_pem = certs::CaPem {
        cert_pem: String::from_utf8_lossy(&read(&dir.path().join("ca.crt"))).to_string(),
        key_pem: String::from_utf8_lossy(&read(&dir.path().join("ca.key"))).to_string(),
    };
    let client = certs::issue_client(&ca_pem, "kube-apiserver", Duration::from_secs(3600))
        .unwrap_or_else(|e| panic!("{e}"));
    let ca_file = dir.path().join("ca.crt");
    let server = serve_files(
        dir.path(),
        &["--client-ca", ca_file.to_str().unwrap_or_default()],
    );
    let ca = read(&ca_file);

    let anonymous = Tls::new(&ca, Alpn::Both, None).unwrap_or_else(|e| panic!("{e}"));
    let refused = match Connection::connect(server.https, &anonymous, None).await {
        Err(_) => true,
        // TLS 1.3 reports the missing certificate on first use.
        Ok(mut c) => c
            .post("/mutate", fixture("10-create-mutated.mutate.json"))
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate was served");

    let authed = Tls::new(
        &ca,
        Alpn::Both,
        Some((client.cert_pem.as_bytes(), client.key_pem.as_bytes())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut conn = Connection::connect(server.https, &authed, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = conn
        .post("/mutate", fixture("10-create-mutated.mutate.json"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 200);
}

/// Open a raw HTTP/1.1-over-TLS request and send only part of its body.
async fn half_sent_request(
    addr: std::net::SocketAddr,
    ca: &[u8],
    path: &str,
    body: &[u8],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    let mut tls = tls_stream(addr, ca, &[b"http/1.1"]).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let half = body.len() / 2;
    tls.write_all(&body[..half])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tls.flush().await.unwrap_or_else(|e| panic!("{e}"));
    (tls, body[half..].to_vec())
}

async fn read_response(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).to_string()
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_0() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let mut server = serve_files(dir.path(), &["--shutdown-delay", "1s"]);
    let body = fixture("01-apply-v1alpha1-legacy.validate.json");
    let (mut tls, rest) =
        half_sent_request(server.https, &ca, "/validate?timeout=10s", &body).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.signal("TERM");
    // Readiness turns false at once, while the delay keeps serving.
    let end = Instant::now() + Duration::from_secs(2);
    let mut saw_503 = false;
    while Instant::now() < end && !saw_503 {
        saw_503 = http_get(server.probes, "/readyz").0 == 503;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_503, "/readyz did not turn 503 after SIGTERM");

    tls.write_all(&rest).await.unwrap_or_else(|e| panic!("{e}"));
    tls.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let text = read_response(&mut tls).await;
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "in-flight request lost: {text}"
    );
    assert!(
        text.contains("bd89c2a8-f4c9-4db8-b02c-3f9d7ab49bb1") || text.contains("\"uid\""),
        "{text}"
    );
    let status = server
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("did not exit"));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_body_gets_408() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let server = serve_files(dir.path(), &[]);
    let body = fixture("06-create-dry-run.validate.json");
    let (mut tls, _rest) =
        half_sent_request(server.https, &ca, "/validate?timeout=1s", &body).await;
    let text = read_response(&mut tls).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn self_signed_mode_writes_a_ca_that_verifies_the_server() {
    let dir = tempdir();
    let ca_path = dir.path().join("local-ca.crt");
    let server = Server::start(&[
        "--self-signed",
        "--ca-out",
        ca_path.to_str().unwrap_or_default(),
    ]);
    let ca = read(&ca_path);
    let mut conn = connect(server.https, &ca, Alpn::Both).await;
    let resp = conn
        .post("/mutate", fixture("10-create-mutated.mutate.json"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 200);
    assert_eq!(http_get(server.probes, "/readyz").0, 200);
}

#[tokio::test]
async fn wrong_methods_paths_and_content_types_get_clear_4xx() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let server = serve_files(dir.path(), &[]);
    let mut conn = connect(server.https, &ca, Alpn::Both).await;
    let req = |method: &str, path: &str, ct: &str| {
        http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", server.https))
            .header("content-type", ct)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let cases = [
        (req("GET", "/mutate", "application/json"), 405),
        (req("PUT", "/convert", "application/json"), 405),
        (req("POST", "/nope", "application/json"), 404),
        (req("POST", "/mutate", "text/plain"), 415),
        (
            req("POST", "/validate", "application/json; charset=utf-8"),
            400,
        ),
    ];
    for (r, want) in cases {
        let label = format!("{} {}", r.method(), r.uri());
        let resp = conn.send(r).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status.as_u16(), want, "{label}");
    }
}

/// `serve --warn-only`: what the rule would deny is admitted, with the
/// error as a warning, and counted as `enforcement="warn"`; other rules
/// still deny.
#[tokio::test]
async fn warn_only_rules_admit_with_a_warning_and_are_counted_apart() {
    let dir = tempdir();
    make_certs(dir.path());
    let ca = read(&dir.path().join("ca.crt"));
    let body =
        std::fs::read("examples/update-running-denied.json").unwrap_or_else(|e| panic!("{e}"));

    let server = serve_files(dir.path(), &["--warn-only", "V14,V15"]);
    let mut conn = connect(server.https, &ca, Alpn::Both).await;
    let resp = conn
        .post("/validate", body.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v = json(&resp.body);
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let warnings: Vec<String> =
        serde_json::from_value(v["response"]["warnings"].clone()).expect("the expected shape");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("V15 (warn-only): spec.repos: Forbidden")),
        "{warnings:?}"
    );
    let m = http_get(server.probes, "/metrics").1;
    assert_eq!(
        metric(
            &m,
            r#"agentic_webhook_denials_total{rule="V15",enforcement="warn"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"agentic_webhook_denials_total{rule="V15",enforcement="deny"}"#
        ),
        None
    );

    // Only the named rules: V15 alone still leaves V14 denying.
    let strict = serve_files(dir.path(), &["--warn-only", "V15"]);
    let mut conn = connect(strict.https, &ca, Alpn::Both).await;
    let resp = conn
        .post("/validate", body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v = json(&resp.body);
    assert_eq!(v["response"]["allowed"], false, "{v}");

    // An unknown id is a usage error, before anything serves.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--self-signed", "--warn-only", "V99"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a rule id"));
}
