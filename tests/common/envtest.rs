//! A real control plane for tests: etcd + kube-apiserver on free loopback
//! ports, one per test binary, found the way controller-runtime's envtest
//! finds them.
//!
//! Binaries: with `KUBEBUILDER_ASSETS` set, `kube-apiserver` and `etcd` come
//! from that folder only. Without it, `kube-apiserver` is unpacked once from
//! `../shared/kube/kube-apiserver.xz` into `target/kube-assets/` and etcd is
//! taken from `PATH`; failing that, both from `PATH`. When they cannot be
//! found the tests are skipped with one line saying how to get them, except
//! with `CI=true`, where that line fails the test.
//!
//! Processes die with the test binary: they are spawned from one keeper
//! thread that lives as long as the process, with `PR_SET_PDEATHSIG`, and an
//! `atexit` hook kills them and removes the temp dir (also after a panic).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// How to get the binaries, printed when they are missing.
pub const HOW_TO_GET: &str = "needs kube-apiserver and etcd: set KUBEBUILDER_ASSETS \
     (`setup-envtest use 1.35.x -p path`), or keep ../shared/kube/kube-apiserver.xz beside \
     the repo and `apt-get install etcd-server`; see docs/testing.md";

/// The namespace the shipped manifests install into.
pub const SYSTEM_NS: &str = "agentic-system";

/// Identities with a static bearer token (`--token-auth-file`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// `system:masters`: may do anything, including impersonation.
    Admin,
    /// The reconciler's service account, as the manifests name it.
    Reconciler,
    /// The webhook's service account (self-managed certificates).
    Webhook,
    /// A person: `alice`, group `system:authenticated` (RBAC decides the rest).
    Alice,
}

impl Principal {
    const ALL: [Principal; 4] = [
        Principal::Admin,
        Principal::Reconciler,
        Principal::Webhook,
        Principal::Alice,
    ];

    pub fn username(self) -> &'static str {
        match self {
            Principal::Admin => "admin",
            Principal::Reconciler => "system:serviceaccount:agentic-system:agentic-reconciler",
            Principal::Webhook => "system:serviceaccount:agentic-system:agentic-webhook",
            Principal::Alice => "alice",
        }
    }

    fn groups(self) -> &'static str {
        match self {
            Principal::Admin => "system:masters,system:authenticated",
            Principal::Reconciler | Principal::Webhook => {
                "system:serviceaccounts,system:serviceaccounts:agentic-system,system:authenticated"
            }
            Principal::Alice => "system:authenticated",
        }
    }

    pub fn token(self) -> String {
        format!("{}-token", self.key())
    }

    fn key(self) -> &'static str {
        match self {
            Principal::Admin => "admin",
            Principal::Reconciler => "reconciler",
            Principal::Webhook => "webhook",
            Principal::Alice => "alice",
        }
    }
}

/// Who a client acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    Token(Principal),
    /// The admin impersonating `user` with `groups` (`Impersonate-*` headers).
    As {
        user: String,
        groups: Vec<String>,
    },
}

impl Who {
    pub fn admin() -> Who {
        Who::Token(Principal::Admin)
    }

    pub fn user(user: &str, groups: &[&str]) -> Who {
        Who::As {
            user: user.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn file_stem(&self) -> String {
        match self {
            Who::Token(p) => p.key().to_owned(),
            Who::As { user, groups } => {
                let raw = format!("as-{user}-{}", groups.join("-"));
                raw.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect()
            }
        }
    }
}

pub struct ControlPlane {
    dir: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// `http://127.0.0.1:PORT`
    pub etcd_url: String,
    /// The apiserver's CA (PEM path).
    pub ca_file: PathBuf,
    pub started_in: Duration,
}

static PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane of this test binary, started on first use; `None`
/// (after printing why, once) when the binaries are missing outside CI.
pub fn control_plane() -> Option<&'static ControlPlane> {
    match PLANE.get_or_init(start_plane) {
        Ok(cp) => Some(cp),
        Err(why) if why.starts_with(MISSING) && !in_ci() => {
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| say(&format!("SKIPPED {why}")));
            None
        }
        Err(why) if why.starts_with(MISSING) => panic!("CI=true: {why}"),
        Err(why) => panic!("{why}"),
    }
}

/// Start of the one line said when binaries are missing.
pub const MISSING: &str = "real-apiserver tests:";

/// A line on the test binary's stderr that libtest does not capture.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `let Some(cp) = require!() else { return };` in every real-apiserver test.
#[macro_export]
macro_rules! control_plane_or_skip {
    () => {
        match common::envtest::control_plane() {
            Some(cp) => cp,
            None => return,
        }
    };
}

struct Assets {
    apiserver: PathBuf,
    etcd: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// `kube-apiserver` from `../shared/kube/`, unpacked once into `target/kube-assets/`.
fn shared_apiserver() -> Result<Option<PathBuf>, String> {
    shared_binary("kube-apiserver")
}

/// `../shared/kube/NAME.xz` (kube-apiserver, agnhost), unpacked once into
/// `target/kube-assets/`; `None` when it is not there.
pub fn shared_binary(name: &str) -> Result<Option<PathBuf>, String> {
    let xz = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../shared/kube/{name}.xz"));
    if !xz.is_file() {
        return Ok(None);
    }
    let dir = target_dir().join("kube-assets");
    let out = dir.join(name);
    if out.is_file() {
        return Ok(Some(out));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Unpack beside, then rename: a concurrent or interrupted unpack never
    // leaves a half-written binary under the final name.
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let status = Command::new("xz")
        .arg("-dc")
        .arg(&xz)
        .stdout(file)
        .status()
        .map_err(|e| format!("running xz to unpack {}: {e}", xz.display()))?;
    if !status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("xz -dc {} failed: {status}", xz.display()));
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .and_then(|()| std::fs::rename(&tmp, &out))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Some(out))
}

fn find_assets() -> Result<Assets, String> {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let dir = PathBuf::from(dir);
        let apiserver = dir.join("kube-apiserver");
        let etcd = dir.join("etcd");
        return match (apiserver.is_file(), etcd.is_file()) {
            (true, true) => Ok(Assets { apiserver, etcd }),
            _ => Err(format!(
                "{MISSING} KUBEBUILDER_ASSETS={} holds no kube-apiserver and etcd; {HOW_TO_GET}",
                dir.display()
            )),
        };
    }
    let apiserver = match shared_apiserver()? {
        Some(p) => Some(p),
        None => on_path("kube-apiserver"),
    };
    match (apiserver, on_path("etcd")) {
        (Some(apiserver), Some(etcd)) => Ok(Assets { apiserver, etcd }),
        (a, e) => Err(format!(
            "{MISSING} no {} found; {HOW_TO_GET}",
            match (a, e) {
                (None, None) => "kube-apiserver or etcd",
                (None, Some(_)) => "kube-apiserver",
                _ => "etcd",
            }
        )),
    }
}

// ---------------------------------------------------------------------------
// Processes that live exactly as long as the test binary.

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
static KEPT_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static TEMP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Ask the kernel to SIGKILL the child when the thread that spawned it
/// ends (for processes kept by the keeper thread: when the binary exits).
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

extern "C" fn cleanup_at_exit() {
    if let Ok(pids) = KEPT_PIDS.lock() {
        for pid in pids.iter() {
            if let Ok(pid) = i32::try_from(*pid) {
                // SAFETY: plain syscalls on our own children.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
        }
    }
    if let Ok(dirs) = TEMP_DIRS.lock() {
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Spawn `cmd` from the keeper thread: it dies with the test binary, not
/// with the test that happened to start it.
pub fn spawn_kept(cmd: Command) -> std::io::Result<Child> {
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("envtest-keeper".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    die_with_parent(&mut cmd);
                    let child = cmd.spawn();
                    if let (Ok(c), Ok(mut pids)) = (&child, KEPT_PIDS.lock()) {
                        pids.push(c.id());
                    }
                    let _ = reply.send(child);
                }
            })
            .unwrap_or_else(|e| panic!("keeper thread: {e}"));
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    keeper
        .lock()
        .map_err(|_| std::io::Error::other("keeper poisoned"))?
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("keeper gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("keeper gone"))?
}

/// A free loopback port (bound, then released for the process to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn tail(path: &Path, lines: usize) -> String {
    // Diagnostics only: a missing log is an empty tail, not a second panic.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn scratch_root() -> PathBuf {
    // etcd fsyncs every write: on tmpfs that costs nothing.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Remove the dirs of earlier test binaries that were killed outright.
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix("agentic-envtest-")
            && let Ok(pid) = pid.parse::<u32>()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn start_plane() -> Result<ControlPlane, String> {
    let assets = find_assets()?;
    let started = Instant::now();
    let root = scratch_root();
    sweep_stale(&root);
    let dir = root.join(format!("agentic-envtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Ok(mut d) = TEMP_DIRS.lock() {
        d.push(dir.clone());
    }

    // Serving certificate (SAN IP 127.0.0.1) and the service-account key.
    let ca = agentic_webhook::certs::generate_ca("envtest CA", Duration::from_secs(86_400))
        .map_err(|e| e.to_string())?;
    let serving = agentic_webhook::certs::issue_serving(
        &ca,
        &["localhost".to_owned()],
        &["127.0.0.1".parse().map_err(|e| format!("{e}"))?],
        Duration::from_secs(86_400),
    )
    .map_err(|e| e.to_string())?;
    let sa =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let ca_file = dir.join("ca.crt");
    write(&ca_file, &ca.cert_pem)?;
    write(&dir.join("tls.crt"), &serving.cert_pem)?;
    write(&dir.join("tls.key"), &serving.key_pem)?;
    write(&dir.join("sa.key"), &sa.serialize_pem())?;
    write(&dir.join("sa.pub"), &sa.public_key_pem())?;
    let tokens: String = Principal::ALL
        .iter()
        .map(|p| {
            format!(
                "{},{},{}-uid,\"{}\"\n",
                p.token(),
                p.username(),
                p.key(),
                p.groups()
            )
        })
        .collect();
    write(&dir.join("tokens.csv"), &tokens)?;

    let mut last_error = String::new();
    // A port picked free can be taken before the process binds it: try again.
    for _ in 0..3 {
        let (ep, pp, ap) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{ep}");
        let url = format!("https://127.0.0.1:{ap}");
        let etcd_log = dir.join("etcd.log");
        let api_log = dir.join("kube-apiserver.log");
        let etcd_data = dir.join("etcd");
        let _ = std::fs::remove_dir_all(&etcd_data);
        let mut etcd = Command::new(&assets.etcd);
        etcd.arg("--data-dir")
            .arg(&etcd_data)
            .args(["--listen-client-urls", &etcd_url])
            .args(["--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{pp}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{pp}"),
            ])
            .args([
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{pp}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&etcd_log)?);
        let mut etcd = spawn_kept(etcd).map_err(|e| format!("starting etcd: {e}"))?;

        let mut api = apiserver_command(&assets.apiserver, &dir)?;
        api.current_dir(&dir)
            .args([
                "--bind-address=127.0.0.1",
                // Also works in a network namespace with no default route.
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={ap}"),
                &format!("--etcd-servers={etcd_url}"),
                "--tls-cert-file=tls.crt",
                "--tls-private-key-file=tls.key",
                "--client-ca-file=ca.crt",
                "--token-auth-file=tokens.csv",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-account-key-file=sa.pub",
                "--service-account-signing-key-file=sa.key",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--disable-admission-plugins=ServiceAccount",
                "--profiling=false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&api_log)?);
        let mut api = spawn_kept(api).map_err(|e| format!("starting kube-apiserver: {e}"))?;

        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            if let Ok(Some(status)) = api.try_wait() {
                break Err(format!("kube-apiserver exited ({status})"));
            }
            if let Ok(Some(status)) = etcd.try_wait() {
                break Err(format!("etcd exited ({status})"));
            }
            if readyz(ap, &Principal::Admin.token(), &ca.cert_pem) {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err("kube-apiserver not ready within 60s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        match ready {
            Ok(()) => {
                let cp = ControlPlane {
                    dir,
                    url,
                    etcd_url,
                    ca_file,
                    started_in: started.elapsed(),
                };
                say(&format!(
                    "envtest: kube-apiserver {} + etcd {} ready in {:.1}s",
                    cp.url,
                    cp.etcd_url,
                    cp.started_in.as_secs_f64()
                ));
                return Ok(cp);
            }
            Err(e) => {
                let _ = api.kill();
                let _ = etcd.kill();
                let _ = api.wait();
                let _ = etcd.wait();
                last_error = format!(
                    "{e}\n--- kube-apiserver log ---\n{}\n--- etcd log ---\n{}",
                    tail(&api_log, 20),
                    tail(&etcd_log, 10)
                );
            }
        }
    }
    Err(format!("control plane did not start: {last_error}"))
}

/// Host names this binary's apiserver resolves, as a cluster's DNS would
/// (e.g. a Service name): `(name, address)`. Call before the plane starts.
pub fn resolve_in_apiserver(entries: &[(&str, &str)]) {
    let _ = APISERVER_HOSTS.set(
        entries
            .iter()
            .map(|(n, a)| ((*n).to_owned(), (*a).to_owned()))
            .collect(),
    );
}

static APISERVER_HOSTS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// The apiserver, run in a private mount namespace whose /etc/hosts holds
/// the names given to [`resolve_in_apiserver`] (what `ip netns exec` does
/// with /etc/netns/NAME/hosts, without a separate network). Go's resolver
/// reads /etc/hosts, so the apiserver reaches webhooks by host name and
/// treats them as it treats in-cluster ones (HTTP/1.1, pooled).
fn apiserver_command(binary: &Path, dir: &Path) -> Result<Command, String> {
    let Some(hosts) = APISERVER_HOSTS.get() else {
        return Ok(Command::new(binary));
    };
    let unshare =
        on_path("unshare").ok_or_else(|| format!("{MISSING} unshare (util-linux) not found"))?;
    let file = dir.join("hosts");
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (name, addr) in hosts {
        text.push_str(&format!("{addr} {name}\n"));
    }
    write(&file, &text)?;
    let mut cmd = Command::new(unshare);
    // SAFETY: geteuid reads the calling process's effective uid; no memory.
    if unsafe { libc::geteuid() } != 0 {
        cmd.arg("--map-root-user");
    }
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
    ])
    .arg(&file)
    .arg(binary);
    Ok(cmd)
}

fn log_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `GET /readyz` over TLS, trusting only the plane's own CA.
fn readyz(port: u16, token: &str, ca_pem: &str) -> bool {
    use rustls_pki_types::pem::PemObject as _;
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let Ok(config) = config else { return false };
    let Ok(name) = rustls_pki_types::ServerName::try_from("127.0.0.1") else {
        return false;
    };
    let Ok(conn) = rustls::ClientConnection::new(std::sync::Arc::new(config), name) else {
        return false;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!(
        "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    if tls.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.starts_with("HTTP/1.1 200") && text.ends_with("ok")
}

// ---------------------------------------------------------------------------
// Clients.

static NAMESPACES: AtomicUsize = AtomicUsize::new(0);

impl ControlPlane {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig file for `who` (written once, reused).
    pub fn kubeconfig(&self, who: &Who) -> PathBuf {
        let path = self.dir.join(format!("{}.kubeconfig", who.file_stem()));
        if path.is_file() {
            return path;
        }
        let user = match who {
            Who::Token(p) => json!({"token": p.token()}),
            Who::As { user, groups } => json!({
                "token": Principal::Admin.token(),
                "as": user,
                "as-groups": groups,
            }),
        };
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {
                "server": self.url,
                "certificate-authority": self.ca_file,
            }}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "user"}}],
            "current-context": "envtest",
        });
        // JSON is YAML; write beside and rename so readers never see half a file.
        static WRITES: AtomicUsize = AtomicUsize::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}.{n}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(&config).expect("serializes");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// A kube client acting as `who`.
    pub async fn client_as(&self, who: &Who) -> kube::Client {
        let path = self.kubeconfig(who);
        let kc = kube::config::Kubeconfig::read_from(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"))
    }

    /// The admin's client.
    pub async fn client(&self) -> kube::Client {
        self.client_as(&Who::admin()).await
    }

    /// Run kubectl as `who`, with `stdin` if given.
    pub fn kubectl(&self, who: &Who, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig(who))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("kubectl (is it installed?): {e}"));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input)
                .unwrap_or_else(|e| panic!("kubectl stdin: {e}"));
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"))
    }

    /// kubectl as the admin; panics with its stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.kubectl(&Who::admin(), args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Until the CRD `name` is Established (its API is served).
    pub fn wait_established(&self, name: &str) {
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{name}"),
                "--timeout=30s",
            ],
            None,
        );
    }

    /// A fresh namespace for one test (namespaces never finish deleting
    /// here: there is no namespace controller).
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> String {
        let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{n}");
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": name}}))
            .unwrap_or_else(|e| panic!("{e}"));
        match api.create(&kube::api::PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => panic!("creating namespace {name}: {e}"),
        }
        name
    }

    /// Every key under `prefix` in etcd with its value parsed as JSON
    /// (custom resources are stored as JSON), read through etcd's v3 JSON
    /// gateway: what is really stored, not what the apiserver serves.
    pub fn etcd_prefix(&self, prefix: &str) -> BTreeMap<String, Value> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last = last.saturating_add(1);
        }
        let body = json!({"key": b64.encode(prefix), "range_end": b64.encode(&end)}).to_string();
        let addr = self.etcd_url.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("etcd {addr}: {e}"));
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let req = format!(
            "POST /v3/kv/range HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("etcd write: {e}"));
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, payload) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("etcd answered: {text}"));
        assert!(head.starts_with("HTTP/1.1 200"), "etcd answered: {text}");
        let payload = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(payload)
        } else {
            payload.to_owned()
        };
        let v: Value =
            serde_json::from_str(&payload).unwrap_or_else(|e| panic!("etcd JSON ({e}): {payload}"));
        let decode = |f: &Value| {
            f.as_str()
                .and_then(|s| b64.decode(s).ok())
                .unwrap_or_default()
        };
        v["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let key = String::from_utf8_lossy(&decode(&kv["key"])).to_string();
                let value = serde_json::from_slice(&decode(&kv["value"])).unwrap_or(Value::Null);
                (key, value)
            })
            .collect()
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Poll `check` until it returns `Ok`; after `timeout`, panic with `what`
/// and the last `Err` (what was seen instead).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) if tokio::time::Instant::now() > end => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
