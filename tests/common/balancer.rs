//! HAProxy in `mode tcp`, round-robin per connection: the stand-in for
//! kube-proxy in front of the webhook's Service. Backends are slots whose
//! address and state are changed at run time over HAProxy's admin socket,
//! as endpoints come and go.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Proc;
use super::envtest::{MISSING, free_port, say};

pub struct Balancer {
    _proc: Proc,
    /// Where clients connect (the Service's address).
    pub addr: SocketAddr,
    socket: PathBuf,
}

fn haproxy() -> Option<PathBuf> {
    [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl Balancer {
    /// HAProxy with `slots` backends, all out of rotation; `None` (said
    /// once) when haproxy is not installed outside CI.
    pub fn start(dir: &Path, slots: usize) -> Option<Balancer> {
        let Some(bin) = haproxy() else {
            let why = format!("{MISSING} haproxy not installed (apt-get install haproxy)");
            assert!(!in_ci(), "CI=true: {why}");
            say(&format!("SKIPPED {why}"));
            return None;
        };
        let port = free_port();
        let socket = dir.join("haproxy.sock");
        let servers: String = (0..slots)
            .map(|i| format!("    server s{i} 127.0.0.1:1 disabled\n"))
            .collect();
        // Long client/server timeouts: idle connections end when their
        // ends close them, as through kube-proxy, not by the balancer.
        let config = format!(
            "global\n    stats socket {} mode 600 level admin\n    maxconn 4000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10m\n    timeout server 10m\n\
             frontend webhook\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
             backend replicas\n    balance roundrobin\n{servers}",
            socket.display()
        );
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
        let mut cmd = Command::new(bin);
        cmd.arg("-db").arg("-f").arg(&cfg);
        // Kept: shared by the tests of a binary, which run on other threads.
        let proc = Proc::spawn(cmd, true);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() || std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not start: {:?}",
                proc.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Balancer {
            _proc: proc,
            addr,
            socket,
        })
    }

    /// One admin-socket command; its answer.
    pub fn command(&self, line: &str) -> String {
        let mut s = UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("{}: {e}", self.socket.display()));
        s.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("haproxy socket: {e}"));
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// Put `addr` in rotation in `slot` (a ready endpoint was added).
    pub fn add(&self, slot: usize, addr: SocketAddr) {
        let set = self.command(&format!(
            "set server replicas/s{slot} addr {} port {}",
            addr.ip(),
            addr.port()
        ));
        assert!(set.contains("changed") || set.contains("no need"), "{set}");
        let ready = self.command(&format!("set server replicas/s{slot} state ready"));
        assert!(ready.trim().is_empty(), "{ready}");
    }

    /// Take `slot` out of rotation: no new connections; established ones
    /// stay, as with kube-proxy when an endpoint is removed.
    pub fn remove(&self, slot: usize) {
        let out = self.command(&format!("set server replicas/s{slot} state maint"));
        assert!(out.trim().is_empty(), "{out}");
    }
}
