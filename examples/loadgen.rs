//! Load generator: drives a running webhook (or the floor server) over HTTPS
//! with kept-alive HTTP/2 connections, the way the apiserver does, and
//! reports requests/s, latency percentiles (hdrhistogram), errors and the
//! server's RSS. Loopback only; bounded by `--duration` and `--requests`.
//!
//! Against a server it starts itself (measures start-to-ready, then load):
//!   cargo run --release --example loadgen -- --spawn target/release/agentic-webhook
//! Against a running one:
//!   cargo run --release --example loadgen -- --addr 127.0.0.1:8443 --ca /tmp/agentic-ca.crt --server-pid PID
//! Against agnhost, the Kubernetes e2e webhook, for comparison (in a network
//! namespace whose only interface is lo: agnhost binds every interface):
//!   unshare --net sh -c 'ip link set lo up && target/release/examples/loadgen \
//!     --spawn target/kube-assets/agnhost --agnhost --mix create=1,update=1,status=1'
//!
//! With `--rate R` requests are scheduled at fixed intervals and latency is
//! measured from each request's scheduled time, so a stalled server shows up
//! in the percentiles instead of slowing the generator (no coordinated omission).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentic_webhook::testkit::client::{Alpn, Connection, Tls};
use agentic_webhook::testkit::workload;
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser, Clone)]
#[command(about = "HTTPS/HTTP2 load generator for agentic-webhook")]
struct Args {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:18443")]
    addr: SocketAddr,
    /// CA that signed the server's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Start this server binary first (agentic-webhook, the floor example
    /// or agnhost) with a self-signed certificate on --addr / --probe-addr,
    /// measure its start-to-ready time, and stop it (SIGTERM) at the end.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// The spawned binary is the floor example (different arguments).
    #[arg(long, conflicts_with = "agnhost")]
    floor: bool,
    /// The spawned binary is agnhost (`agnhost webhook`, the Kubernetes e2e
    /// webhook): every review goes to its decode-and-allow
    /// `/custom-resource`. agnhost listens on every interface, so this runs
    /// only where loopback is the sole interface (`unshare --net`).
    #[arg(long)]
    agnhost: bool,
    /// Probe address of the spawned server (polled for /readyz).
    #[arg(long, default_value = "127.0.0.1:18080")]
    probe_addr: SocketAddr,
    /// PID of an already running server, for RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// TCP (TLS) connections; requests multiplex over them with HTTP/2.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stop after this long (at most 300 s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 10_000_000)]
    requests: u64,
    /// Target requests per second (open loop); unset = as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Unmeasured warm-up before the run.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Weights of create (legacy v1alpha1 CREATE: /mutate and /validate),
    /// update (repo change while Running, denied), status (controller
    /// status write) and convert (a list read through v1alpha1).
    #[arg(long, default_value = "create=30,update=30,status=30,convert=10")]
    mix: String,
    /// Objects per conversion review.
    #[arg(long, default_value_t = 20)]
    convert_objects: usize,
    /// Offer only HTTP/1.1 (one request per connection at a time).
    #[arg(long)]
    http1: bool,
    /// Also print the result as one JSON line (for scripts/bench.sh).
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    agentic_webhook::duration::parse(s).map_err(|e| e.to_string())
}

#[derive(Clone)]
struct Req {
    path: &'static str,
    body: Bytes,
}

/// The request sequence: the mix expanded to a cycle of 100 slots, each slot
/// cycling through a few distinct bodies.
fn plan(args: &Args) -> anyhow::Result<Vec<Req>> {
    const VARIANTS: usize = 8;
    let mut weights = [0u32; 4];
    for part in args.mix.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .context("mix entries are kind=weight")?;
        let w: u32 = v.trim().parse().context("mix weight")?;
        let slot = match k.trim() {
            "create" => 0,
            "update" => 1,
            "status" => 2,
            "convert" => 3,
            other => bail!("unknown mix kind {other:?}"),
        };
        weights[slot] = w;
    }
    let total: u32 = weights.iter().sum();
    if total == 0 {
        bail!("mix has no weight");
    }
    let mut seq = Vec::new();
    for v in 0..VARIANTS {
        let create = Bytes::from(workload::create_legacy(v));
        let update = Bytes::from(workload::update_running_denied(v));
        let status = Bytes::from(workload::status_update(v));
        let convert = Bytes::from(workload::conversion_review(args.convert_objects));
        for (slot, &w) in weights.iter().enumerate() {
            for i in 0..w {
                let (path, body) = match slot {
                    0 if i % 2 == 0 => ("/mutate?timeout=10s", &create),
                    0 => ("/validate?timeout=10s", &create),
                    1 if i % 2 == 0 => ("/mutate?timeout=10s", &update),
                    1 => ("/validate?timeout=10s", &update),
                    2 => ("/validate?timeout=10s", &status),
                    _ => ("/convert?timeout=10s", &convert),
                };
                seq.push(Req {
                    path,
                    body: body.clone(),
                });
            }
        }
    }
    // Interleave kinds rather than running them in blocks.
    let n = seq.len();
    let stride = (1..n)
        .rev()
        .find(|s| gcd(*s, n) == 1 && *s < n / 2)
        .unwrap_or(1);
    Ok((0..n).map(|i| seq[(i * stride) % n].clone()).collect())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Spawned {
    child: Child,
    ready_after: Duration,
    ca: PathBuf,
}

fn spawn(args: &Args, bin: &Path) -> anyhow::Result<Spawned> {
    let ca = std::env::temp_dir().join(format!("loadgen-ca-{}.crt", std::process::id()));
    let _ = std::fs::remove_file(&ca);
    let mut cmd = Command::new(bin);
    let certs = std::env::temp_dir().join(format!("loadgen-certs-{}", std::process::id()));
    if args.agnhost {
        agentic_webhook::testkit::write_localhost_certs(&certs)?;
        std::fs::copy(certs.join("ca.crt"), &ca)?;
        cmd.args(["webhook", "--port", &args.addr.port().to_string()])
            .arg("--tls-cert-file")
            .arg(certs.join("tls.crt"))
            .arg("--tls-private-key-file")
            .arg(certs.join("tls.key"));
    } else if args.floor {
        cmd.args(["--addr", &args.addr.to_string()])
            .args(["--probe-addr", &args.probe_addr.to_string()])
            .arg("--ca-out")
            .arg(&ca);
    } else {
        cmd.args(["serve", "--self-signed", "--addr", &args.addr.to_string()])
            .args(["--probe-addr", &args.probe_addr.to_string()])
            .args(["--controller-user", workload::CONTROLLER_USER])
            .arg("--ca-out")
            .arg(&ca);
    }
    if args.http1 && !args.agnhost {
        cmd.arg("--disable-http2");
    }
    // agnhost logs every probe connection as a TLS handshake error.
    let stderr = if args.agnhost {
        Stdio::null()
    } else {
        Stdio::inherit()
    };
    cmd.env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = started + Duration::from_secs(10);
    loop {
        // agnhost has no plain-HTTP probe port: listening is ready.
        let up = if args.agnhost {
            std::net::TcpStream::connect_timeout(&args.addr, Duration::from_millis(50)).is_ok()
        } else {
            ready(args.probe_addr)
        };
        if up {
            break;
        }
        if Instant::now() > deadline {
            bail!("server not ready after 10 s");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let _ = std::fs::remove_dir_all(&certs);
    Ok(Spawned {
        child,
        ready_after: started.elapsed(),
        ca,
    })
}

/// GET /readyz over a plain blocking socket: no runtime needed, cheap to poll.
fn ready(probe: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(50)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

#[derive(Default)]
struct Tally {
    hist: Option<Histogram<u64>>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Where a worker gets its next request number and the time it is due.
#[derive(Clone)]
enum Source {
    /// Closed loop: as fast as the server answers.
    Closed(Arc<AtomicU64>),
    /// Open loop: a pacer thread releases request k at start + k/rate. A
    /// thread, because tokio's timers are millisecond-grained and would add
    /// up to 1 ms of schedule lag to every request at 5,000/s.
    Paced(Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>>>),
}

impl Source {
    async fn next(&self) -> Option<(u64, Instant)> {
        match self {
            Source::Closed(n) => Some((n.fetch_add(1, Ordering::Relaxed), Instant::now())),
            Source::Paced(rx) => rx.lock().await.recv().await,
        }
    }
}

fn pacer(start: Instant, end: Instant, limit: u64, rate: f64) -> Source {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for k in 0..limit {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            if due >= end {
                break;
            }
            // std sleeps are precise to tens of µs; no spinning, which would
            // steal a core from the server on a 2-core machine.
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send((k, due)).is_err() {
                break;
            }
        }
    });
    Source::Paced(Arc::new(tokio::sync::Mutex::new(rx)))
}

async fn worker(
    mut conn: Connection,
    seq: Arc<Vec<Req>>,
    source: Source,
    end: Instant,
    limit: u64,
) -> Tally {
    let mut t = Tally {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..Tally::default()
    };
    loop {
        let Some((k, scheduled)) = source.next().await else {
            break;
        };
        if k >= limit || Instant::now() >= end {
            break;
        }
        let Some(req) = seq.get((k as usize) % seq.len().max(1)) else {
            break;
        };
        match conn.post(req.path, req.body.clone()).await {
            Ok(resp) if resp.status == 200 => t.ok += 1,
            Ok(resp) => {
                t.errors += 1;
                t.first_error
                    .get_or_insert_with(|| format!("HTTP {} on {}", resp.status, req.path));
            }
            Err(e) => {
                t.errors += 1;
                t.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        let micros = scheduled.elapsed().as_micros().max(1) as u64;
        if let Some(h) = t.hist.as_mut() {
            let _ = h.record(micros.min(60_000_000));
        }
    }
    t
}

async fn run(
    args: &Args,
    ca_pem: &[u8],
    seq: Arc<Vec<Req>>,
    duration: Duration,
    limit: u64,
) -> anyhow::Result<(Tally, Duration)> {
    let alpn = if args.http1 { Alpn::Http1 } else { Alpn::H2 };
    let tls = Tls::new(ca_pem, alpn, None)?;
    let mut conns = Vec::new();
    for _ in 0..args.connections.max(1) {
        conns.push(Connection::connect(args.addr, &tls, None).await?);
    }
    // HTTP/2: workers share the connections' streams; HTTP/1.1: one
    // connection per worker.
    let mut workers = Vec::new();
    for i in 0..args.concurrency.max(1) {
        workers.push(
            match conns.get(i % conns.len()).and_then(Connection::share) {
                Some(c) => c,
                None => Connection::connect(args.addr, &tls, None).await?,
            },
        );
    }
    let start = Instant::now();
    let end = start + duration;
    let source = match args.rate {
        Some(r) if r > 0.0 => pacer(start, end, limit, r),
        _ => Source::Closed(Arc::new(AtomicU64::new(0))),
    };
    let handles: Vec<_> = workers
        .into_iter()
        .map(|conn| tokio::spawn(worker(conn, seq.clone(), source.clone(), end, limit)))
        .collect();
    let mut total = Tally {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..Tally::default()
    };
    for h in handles {
        let t = h.await?;
        total.ok += t.ok;
        total.errors += t.errors;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
        if let (Some(a), Some(b)) = (total.hist.as_mut(), t.hist.as_ref()) {
            let _ = a.add(b);
        }
    }
    Ok((total, start.elapsed()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        bail!("--addr must be a loopback address: this tool only loads local servers");
    }
    let duration = args.duration.min(Duration::from_secs(300));
    if args.agnhost && !agentic_webhook::testkit::loopback_only() {
        bail!(
            "--agnhost: agnhost listens on every interface; run this in a network namespace whose only interface is lo (unshare --net)"
        );
    }
    let mut seq = plan(&args)?;
    if args.agnhost {
        // agnhost's counterpart of both webhooks: decode the review and
        // the object, allow. It serves no conversion reviews.
        if seq.iter().any(|r| r.path.starts_with("/convert")) {
            bail!("--agnhost serves admission reviews only: use a --mix without convert");
        }
        for r in &mut seq {
            r.path = "/custom-resource?timeout=10s";
        }
    }
    let seq = Arc::new(seq);

    let mut spawned = match &args.spawn {
        Some(bin) => Some(spawn(&args, bin)?),
        None => None,
    };
    let pid = spawned.as_ref().map(|s| s.child.id()).or(args.server_pid);
    let ca_path = match (&spawned, &args.ca) {
        (_, Some(p)) => p.clone(),
        (Some(s), None) => s.ca.clone(),
        (None, None) => bail!("--ca is required without --spawn"),
    };
    let ca_pem =
        std::fs::read(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    let idle_rss = pid.and_then(|p| rss_kib(p, "VmRSS:"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        if !args.warmup.is_zero() {
            let warm = Args {
                rate: None,
                ..args.clone()
            };
            run(&warm, &ca_pem, seq.clone(), args.warmup, u64::MAX).await?;
        }
        run(&args, &ca_pem, seq.clone(), duration, args.requests).await
    });
    let peak_rss = pid.and_then(|p| rss_kib(p, "VmHWM:"));
    let after_rss = pid.and_then(|p| rss_kib(p, "VmRSS:"));
    let mut exit = None;
    if let Some(s) = spawned.as_mut() {
        // SIGTERM: the server drains and must exit 0.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(s.child.id().to_string())
            .status();
        exit = s.child.wait().ok().and_then(|st| st.code());
        let _ = std::fs::remove_file(&s.ca);
    }
    let (tally, elapsed) = result?;
    let n = tally.ok + tally.errors;
    let rps = n as f64 / elapsed.as_secs_f64();
    let q = |p: f64| {
        tally
            .hist
            .as_ref()
            .map(|h| h.value_at_quantile(p))
            .unwrap_or(0)
    };
    let target = if args.floor {
        "floor"
    } else if args.agnhost {
        "agnhost"
    } else {
        "agentic-webhook"
    };
    println!(
        "{target}: {n} requests in {:.2}s = {rps:.0} req/s; errors {}; latency µs p50 {} p90 {} p99 {} p99.9 {} max {}",
        elapsed.as_secs_f64(),
        tally.errors,
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        tally.hist.as_ref().map(|h| h.max()).unwrap_or(0),
    );
    let kib = |v: Option<u64>| {
        v.map(|k| format!("{:.1} MB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "server RSS: idle {}, after {}, peak {}{}",
        kib(idle_rss),
        kib(after_rss),
        kib(peak_rss),
        spawned
            .as_ref()
            .map(|s| format!(
                "; start to ready {:.1} ms; exit code {}",
                s.ready_after.as_secs_f64() * 1e3,
                exit.map_or("?".into(), |c| c.to_string())
            ))
            .unwrap_or_default()
    );
    if let Some(e) = &tally.first_error {
        println!("first error: {e}");
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "target": target, "requests": n, "errors": tally.errors, "seconds": elapsed.as_secs_f64(),
                "rps": rps, "p50_us": q(0.50), "p90_us": q(0.90), "p99_us": q(0.99), "p999_us": q(0.999),
                "idle_rss_kib": idle_rss, "peak_rss_kib": peak_rss,
                "ready_ms": spawned.as_ref().map(|s| s.ready_after.as_secs_f64() * 1e3), "exit_code": exit,
                "rate": args.rate, "connections": args.connections, "concurrency": args.concurrency,
            })
        );
    }
    if tally.errors > 0 {
        std::process::exit(2);
    }
    Ok(())
}
