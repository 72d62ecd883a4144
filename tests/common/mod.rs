//! Shared harness: run the real `agentic-webhook` binary on ephemeral ports
//! and talk to it over real TLS.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod balancer;
pub mod envtest;
pub mod installed;
pub mod lifecycle;
pub mod mockapi;
pub mod standin;

use agentic_webhook::testkit::client::{Alpn, Connection, Tls};

pub const BIN: &str = env!("CARGO_BIN_EXE_agentic-webhook");

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Run `agentic-webhook certs` into `dir`.
pub fn make_certs(dir: &Path) {
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--ip", "127.0.0.1", "--days", "2"])
        .output()
        .unwrap_or_else(|e| panic!("running certs: {e}"));
    assert!(
        out.status.success(),
        "certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A child process whose stderr is read as JSON log lines (our binary with
/// `--log-format json`); killed when dropped.
pub struct Proc {
    child: Child,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Proc {
    /// Spawn `cmd` (stderr is captured); `kept` processes live as long as
    /// the test binary (see `envtest::spawn_kept`), others die with the
    /// test thread that spawned them, or on drop.
    pub fn spawn(mut cmd: Command, kept: bool) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = if kept {
            envtest::spawn_kept(cmd)
        } else {
            envtest::die_with_parent(&mut cmd);
            cmd.spawn()
        };
        let mut child = spawned.unwrap_or_else(|e| panic!("spawning {BIN}: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line.clone()));
                if std::env::var_os("AGENTIC_TEST_ECHO_LOGS").is_some() {
                    eprintln!("{line}");
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(v);
                }
            }
        });
        Proc { child, logs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Wait until a log line satisfies `pred`; returns it.
    pub fn wait_log(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident set size in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size in KiB (Linux).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Server {
    proc: Proc,
    pub https: SocketAddr,
    pub probes: SocketAddr,
}

impl Server {
    /// `serve` with the given extra arguments, on 127.0.0.1 ephemeral ports.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::launch("127.0.0.1:0", args, env, false)
    }

    /// A server on a given HTTPS address (one the apiserver was told of).
    pub fn start_at(addr: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::launch(addr, args, env, false)
    }

    /// A server that lives as long as the test binary (shared by its tests).
    pub fn start_kept(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::launch("127.0.0.1:0", args, env, true)
    }

    fn launch(addr: &str, args: &[&str], env: &[(&str, &str)], kept: bool) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--log-format",
            "json",
            "serve",
            "--addr",
            addr,
            "--probe-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(cmd, kept);
        let serving = proc.wait_log(|v| v["message"] == "serving", Duration::from_secs(20));
        let addr =
            |key: &str| -> Option<SocketAddr> { serving.as_ref()?[key].as_str()?.parse().ok() };
        let (Some(https), Some(probes)) = (addr("https"), addr("probes")) else {
            panic!("server did not start; logs: {:?}", proc.logs());
        };
        Server {
            proc,
            https,
            probes,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.proc.logs()
    }

    /// Wait until a log line satisfies `pred`.
    pub fn wait_log(&self, pred: impl Fn(&serde_json::Value) -> bool, timeout: Duration) -> bool {
        self.proc.wait_log(pred, timeout).is_some()
    }

    pub fn signal(&self, sig: &str) {
        self.proc.signal(sig)
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    /// Resident set size in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc.rss_kib()
    }

    /// Peak resident set size in KiB (Linux).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc.peak_rss_kib()
    }
}

/// A plain HTTP/1.1 GET (probes); returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one un-labelled or labelled sample in /metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn tls(ca: &[u8], alpn: Alpn) -> Tls {
    Tls::new(ca, alpn, None).unwrap_or_else(|e| panic!("tls: {e}"))
}

pub async fn connect(addr: SocketAddr, ca: &[u8], alpn: Alpn) -> Connection {
    Connection::connect(addr, &tls(ca, alpn), None)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// The decoded JSON patch of an admission response, if any.
pub fn patch_of(resp: &serde_json::Value) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let b64 = resp["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A TCP connection to the TLS port, speaking raw bytes.
pub async fn raw(addr: SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

pub async fn read_all(s: &mut (impl tokio::io::AsyncReadExt + Unpin), limit: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
    buf
}

pub fn tls_config(ca: &[u8], alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject as _;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca).flatten() {
        let _ = roots.add(c);
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    std::sync::Arc::new(cfg)
}

pub async fn tls_stream(
    addr: SocketAddr,
    ca: &[u8],
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(tls_config(ca, alpn))
        .connect(name, raw(addr).await)
        .await
        .unwrap_or_else(|e| panic!("TLS: {e}"))
}

/// `serve --self-signed` on ephemeral ports, and the CA it wrote.
pub struct Fixture {
    pub server: Server,
    pub ca: Vec<u8>,
    /// Holds `ca.crt`; scratch space for the test.
    pub dir: tempfile::TempDir,
}

pub fn self_signed(extra: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ca_path = dir.path().join("ca.crt");
    let mut args = vec!["--self-signed", "--ca-out", ca_path.to_str().unwrap_or("")];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let ca = read(&ca_path);
    Fixture { server, ca, dir }
}
