//! The webhook's URL rules against the parser that will use the URL: for a
//! corpus of hostile URLs, real `git ls-remote` is asked where it would
//! connect (through an HTTP proxy on 127.0.0.1 that only reads the request
//! line, or an ssh stand-in that records its arguments), and every URL whose
//! target is a forbidden address must have been denied by V1–V3. Nothing is
//! ever connected to: the proxy answers 502, the ssh stand-in exits 1.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use agentic_webhook::admission::Limits;
use agentic_webhook::admission::git::{UrlProblem, check_host, parse};

/// What the webhook says of `url`.
fn denied(url: &str) -> bool {
    parse(url)
        .and_then(|u| check_host(u.host, &Limits::default()))
        .is_err()
}

/// Whether a host git would connect to is one no URL may reach (the zone
/// of a scoped IPv6 address does not change where it points).
fn forbidden(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let bare = bare.split('%').next().unwrap_or(bare);
    matches!(
        check_host(bare, &Limits::default()),
        Err(UrlProblem::ForbiddenHost(_))
    )
}

fn git(url: &str, dir: &Path, proxy: u16) -> std::process::Child {
    let ssh = dir.join("fake-ssh");
    Command::new("git")
        .args(["-c", &format!("http.proxy=http://127.0.0.1:{proxy}")])
        .args(["ls-remote", url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", &ssh)
        .env("GIT_SSH_VARIANT", "ssh")
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("git is needed for this test: {e}"))
}

/// The host `git ls-remote url` would contact, or None if git refused the
/// URL without contacting anything.
fn target(url: &str, dir: &Path, proxy: &TcpListener) -> Option<String> {
    let port = proxy.local_addr().map(|a| a.port()).unwrap_or(0);
    let args = dir.join("ssh-args");
    let _ = std::fs::remove_file(&args);
    let mut child = git(url, dir, port);
    let mut seen = None;
    // git either calls the proxy, or ssh, or gives up.
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < end {
        if let Ok((mut conn, _)) = proxy.accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let _ = BufReader::new(&conn).read_line(&mut line);
            let _ = conn.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            // `CONNECT host:443 HTTP/1.1` or `GET http://host[:port]/... HTTP/1.1`.
            let what = line.split_whitespace().nth(1).unwrap_or_default();
            let authority = what
                .strip_prefix("http://")
                .map_or(what, |r| r.split('/').next().unwrap_or(r));
            let host = match authority.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(v6).to_owned(),
                None => authority
                    .rsplit_once(':')
                    .map_or(authority, |(h, _)| h)
                    .to_owned(),
            };
            seen = Some(host);
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    if seen.is_some() {
        return seen;
    }
    // ssh gets `user@host` (or `host`) after its options.
    let text = std::fs::read_to_string(&args).ok()?;
    let mut words = text
        .lines()
        .skip_while(|w| w.starts_with('-') || *w == "SendEnv=GIT_PROTOCOL");
    let dest = loop {
        let w = words.next()?;
        if w == "-p" {
            words.next();
            continue;
        }
        if !w.starts_with('-') {
            break w.to_owned();
        }
    };
    Some(
        dest.rsplit_once('@')
            .map_or(dest.clone(), |(_, h)| h.to_owned()),
    )
}

/// `ip` in the spellings `inet_aton` reads (what git, curl and ssh accept).
fn spellings(ip: [u8; 4]) -> Vec<String> {
    let n = u32::from_be_bytes(ip);
    let [a, b, c, d] = ip.map(u32::from);
    vec![
        format!("{a}.{b}.{c}.{d}"),
        format!("{n}"),
        format!("0x{n:x}"),
        format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
        format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        format!("{a}.{}", n & 0x00ff_ffff),
        format!("{a}.{b}.{}", n & 0xffff),
        format!("{a}.{b}.{c}.{d}."),
        format!(
            "%{:02X}{}",
            u32::from(b'0') + a / 100,
            &format!("{a}.{b}.{c}.{d}")[1..]
        ),
        format!("[::ffff:{a}.{b}.{c}.{d}]"),
        format!("[::ffff:{:x}:{:x}]", n >> 16, n & 0xffff),
        format!("{a}\u{3002}{b}\u{3002}{c}\u{3002}{d}"),
        format!("{a}.{b}.{c}.{d}")
            .chars()
            .map(|ch| match ch.to_digit(10) {
                Some(v) => char::from_u32(0xff10 + v).unwrap_or(ch),
                None => ch,
            })
            .collect(),
    ]
}

fn corpus() -> Vec<String> {
    let mut urls: Vec<String> = [
        "http://%31%32%37.0.0.1/x.git",
        "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/x.git",
        "ssh://git@[fe80::1%25eth0]/x.git",
        "https://100.100.100.200/x.git",
        "https://[fd00:ec2::254]/x.git",
        "https://metadata.google.internal/x.git",
        "git@-oProxyCommand=x:y",
        "ssh://-oProxyCommand=x@host/x.git",
        "https://LOCALHOST./x.git",
        "https://[::1]/x.git",
        "https://[::]/x.git",
        "git@[::1]:x/y.git",
    ]
    .map(str::to_owned)
    .to_vec();
    for ip in [
        [127, 0, 0, 1],
        [169, 254, 169, 254],
        [0, 0, 0, 0],
        [100, 100, 100, 200],
    ] {
        for host in spellings(ip) {
            for form in [
                "http://{}/x.git",
                "https://{}:8443/x.git",
                "ssh://git@{}/x.git",
                "git@{}:x/y.git",
            ] {
                urls.push(form.replace("{}", &host));
            }
        }
    }
    urls
}

#[test]
fn every_url_git_would_send_to_a_forbidden_address_is_denied() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ssh = dir.path().join("fake-ssh");
    let args = dir.path().join("ssh-args");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexit 1\n",
            args.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = Command::new("chmod").arg("+x").arg(&ssh).status();
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let _ = proxy.set_nonblocking(true);

    // The harness sees where git goes for an ordinary URL of each kind.
    for (url, host) in [
        ("https://github.com/acme/api.git", "github.com"),
        ("http://git.example.com:8080/a/b.git", "git.example.com"),
        ("ssh://git@github.com/acme/api.git", "github.com"),
        ("git@github.com:acme/api.git", "github.com"),
    ] {
        assert_eq!(
            target(url, dir.path(), &proxy).as_deref(),
            Some(host),
            "{url}"
        );
        assert!(!denied(url), "{url}");
    }

    let (mut reached, mut refused_by_git) = (0, 0);
    let mut missed = Vec::new();
    for url in corpus() {
        match target(&url, dir.path(), &proxy) {
            Some(host) if forbidden(&host) => {
                reached += 1;
                if !denied(&url) {
                    missed.push(format!("{url} -> {host}"));
                }
            }
            Some(host) => {
                eprintln!("{url}: git goes to {host}, not a forbidden address as written")
            }
            None => refused_by_git += 1,
        }
    }
    eprintln!(
        "git differential: {reached} URLs reach a forbidden address through git, \
         {refused_by_git} refused by git itself; missed by the webhook: {}",
        missed.len()
    );
    assert!(
        missed.is_empty(),
        "allowed, but git connects to a forbidden address:\n{}",
        missed.join("\n")
    );
    assert!(reached > 100, "the corpus barely reached git: {reached}");
}
