//! Git URL and ref checks behind V1–V4 and V6. Pure string work, no DNS.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a URL is refused; each maps to one rule and one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlProblem {
    /// V1
    LeadingDash,
    /// V1
    Whitespace,
    /// V1
    Scheme,
    /// V1
    NoHost,
    /// V1
    NoPath,
    /// V1
    BadPort,
    /// V2
    Credentials,
    /// V3
    ForbiddenHost(&'static str),
    /// V3
    HostNotAllowed,
}

impl UrlProblem {
    pub fn detail(&self) -> String {
        match self {
            UrlProblem::LeadingDash => "must not start with \"-\"".into(),
            UrlProblem::Whitespace => "must not contain whitespace or control characters".into(),
            UrlProblem::Scheme => "scheme must be https, http, ssh or git@host:path".into(),
            UrlProblem::NoHost => "must name a host".into(),
            UrlProblem::NoPath => "must name a repository path on the host".into(),
            UrlProblem::BadPort => "port must be a number from 1 to 65535".into(),
            UrlProblem::Credentials => {
                "must not contain credentials (use a git credential Secret)".into()
            }
            UrlProblem::ForbiddenHost(what) => format!("host must not be a {what} address"),
            UrlProblem::HostNotAllowed => "host is not in the allowed git hosts".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
    Ssh,
    /// `git@host:path`
    ScpLike,
}

/// The parts of a git URL the rules look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitUrl<'a> {
    pub scheme: Scheme,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Without brackets for IPv6 literals.
    pub host: &'a str,
    pub path: &'a str,
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Parse and check shape (V1) and credentials (V2). Hosts are checked by
/// [`check_host`].
pub fn parse(url: &str) -> Result<GitUrl<'_>, UrlProblem> {
    if url.starts_with('-') {
        return Err(UrlProblem::LeadingDash);
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlProblem::Whitespace);
    }
    for (prefix, scheme) in [
        ("https://", Scheme::Https),
        ("http://", Scheme::Http),
        ("ssh://", Scheme::Ssh),
    ] {
        if let Some(rest) = strip_prefix_ci(url, prefix) {
            return parse_hierarchical(scheme, rest);
        }
    }
    if let Some(rest) = url.strip_prefix("git@") {
        let (host, path) = rest.split_once(':').ok_or(UrlProblem::Scheme)?;
        if host.is_empty() {
            return Err(UrlProblem::NoHost);
        }
        // `git@host/path` without a colon, or an authority with a slash, is
        // not scp syntax; git would treat it as a local path.
        if host.contains('/') || host.contains('@') {
            return Err(UrlProblem::Scheme);
        }
        if path.is_empty() || path == "/" {
            return Err(UrlProblem::NoPath);
        }
        return Ok(GitUrl {
            scheme: Scheme::ScpLike,
            user: Some("git"),
            password: None,
            host,
            path,
        });
    }
    Err(UrlProblem::Scheme)
}

fn parse_hierarchical(scheme: Scheme, rest: &str) -> Result<GitUrl<'_>, UrlProblem> {
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(ui) => match ui.split_once(':') {
            Some((u, p)) => (Some(u), Some(p)),
            None => (Some(ui), None),
        },
        None => (None, None),
    };
    // https carries tokens as the user part (`https://ghp_x@github.com`);
    // ssh names a login user there, which is fine, but never a password.
    let leaks = match scheme {
        Scheme::Https | Scheme::Http => userinfo.is_some(),
        Scheme::Ssh | Scheme::ScpLike => password.is_some(),
    };
    if leaks {
        return Err(UrlProblem::Credentials);
    }
    let (host, port) = split_host_port(hostport)?;
    if host.is_empty() {
        return Err(UrlProblem::NoHost);
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
    {
        return Err(UrlProblem::BadPort);
    }
    let repo_path = path.trim_start_matches('/');
    if repo_path.is_empty() || repo_path.starts_with(['?', '#']) {
        return Err(UrlProblem::NoPath);
    }
    Ok(GitUrl {
        scheme,
        user,
        password,
        host,
        path,
    })
}

fn split_host_port(hostport: &str) -> Result<(&str, Option<&str>), UrlProblem> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(UrlProblem::NoHost)?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(UrlProblem::NoHost),
            },
        };
    }
    Ok(match hostport.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hostport, None),
    })
}

/// Replace any credentials with `***` so a denial never echoes a token.
pub fn redact(url: &str) -> String {
    for prefix in ["https://", "http://", "ssh://"] {
        if let Some(rest) = strip_prefix_ci(url, prefix) {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            if let Some(at) = rest[..end].rfind('@') {
                return format!("{}***@{}", &url[..prefix.len()], &rest[at + 1..]);
            }
        }
    }
    url.to_owned()
}

/// Host patterns for the allow-list: `github.com` or `*.example.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    pub fn new(s: &str) -> Self {
        HostPattern(s.trim().trim_end_matches('.').to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
            None => host == self.0,
        }
    }
}

/// V3: refuse hosts that reach the node or the cloud metadata service.
pub fn check_host(host: &str, allowed: &[HostPattern]) -> Result<(), UrlProblem> {
    if let Some(what) = forbidden_host_class(host) {
        return Err(UrlProblem::ForbiddenHost(what));
    }
    if !allowed.is_empty() && !allowed.iter().any(|p| p.matches(host)) {
        return Err(UrlProblem::HostNotAllowed);
    }
    Ok(())
}

fn forbidden_host_class(host: &str) -> Option<&'static str> {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Some("loopback");
    }
    if let Ok(v6) = lower.parse::<Ipv6Addr>() {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return classify_v4(v4);
        }
        if v6.is_loopback() {
            return Some("loopback");
        }
        if v6.is_unspecified() {
            return Some("unspecified");
        }
        if (v6.segments()[0] & 0xffc0) == 0xfe80 {
            return Some("link-local");
        }
        return None;
    }
    parse_inet_aton(&lower).and_then(classify_v4)
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.octets()[0] == 0 {
        Some("unspecified")
    } else {
        None
    }
}

/// IPv4 as libc's `inet_aton` (and so git and curl) reads it: one to four
/// parts, each decimal, `0x` hex or `0` octal. `2130706433` and `0x7f.1` are
/// both 127.0.0.1; a plain `parse::<Ipv4Addr>` would let them through.
fn parse_inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x") {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let n = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        nums.push(n);
    }
    let (last, head) = nums.split_last()?;
    let mut value: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        if *n > 255 {
            return None;
        }
        value |= n << (24 - 8 * i);
    }
    let room = 32 - 8 * head.len() as u32;
    if *last >= (1u64 << room) {
        return None;
    }
    value |= last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// V4: `git check-ref-format --branch` rules. Returns what is wrong.
pub fn check_branch(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.starts_with('-') {
        return Err("must not start with \"-\"");
    }
    if name == "@" {
        return Err("must not be \"@\"");
    }
    if name.starts_with('/') {
        return Err("must not start with \"/\"");
    }
    if name.ends_with('/') {
        return Err("must not end with \"/\"");
    }
    if name.ends_with('.') {
        return Err("must not end with \".\"");
    }
    if name.contains("..") {
        return Err("must not contain \"..\"");
    }
    if name.contains("@{") {
        return Err("must not contain \"@{\"");
    }
    if name.contains("//") {
        return Err("must not contain \"//\"");
    }
    if name.chars().any(|c| (c as u32) < 0x20 || c == '\u{7f}') {
        return Err("must not contain control characters");
    }
    if name.contains(' ') {
        return Err("must not contain spaces");
    }
    if name.contains(['~', '^', ':', '?', '*', '[', '\\']) {
        return Err("must not contain any of ~ ^ : ? * [ \\");
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Err("no path component may start with \".\"");
        }
        if component.ends_with(".lock") {
            return Err("no path component may end with \".lock\"");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_four_shapes() {
        for url in [
            "https://github.com/acme/api.git",
            "HTTP://gitlab.example.com:8080/group/sub/repo",
            "ssh://git@github.com:22/acme/api.git",
            "git@github.com:acme/web.git",
            "https://[2001:db8::1]/x/y",
        ] {
            assert!(parse(url).is_ok(), "{url}: {:?}", parse(url));
        }
    }

    #[test]
    fn refuses_local_and_option_like_urls() {
        let cases = [
            ("file:///etc", UrlProblem::Scheme),
            ("ext::sh -c touch% /tmp/pwned", UrlProblem::Whitespace),
            ("ext::sh", UrlProblem::Scheme),
            ("/srv/git/repo", UrlProblem::Scheme),
            ("../repo", UrlProblem::Scheme),
            ("--upload-pack=touch /tmp/x", UrlProblem::LeadingDash),
            ("-u", UrlProblem::LeadingDash),
            ("https:///path", UrlProblem::NoHost),
            ("https://github.com", UrlProblem::NoPath),
            ("https://github.com:99999/a", UrlProblem::BadPort),
            ("git@:a/b", UrlProblem::NoHost),
            ("git@host/a/b", UrlProblem::Scheme),
            ("ftp://host/a", UrlProblem::Scheme),
            ("", UrlProblem::Scheme),
        ];
        for (url, want) in cases {
            assert_eq!(parse(url).err(), Some(want), "{url}");
        }
    }

    #[test]
    fn refuses_credentials_but_allows_ssh_login_user() {
        assert_eq!(
            parse("https://user:token@github.com/a/b").err(),
            Some(UrlProblem::Credentials)
        );
        assert_eq!(
            parse("https://ghp_abc@github.com/a/b").err(),
            Some(UrlProblem::Credentials)
        );
        assert_eq!(
            parse("ssh://git:pw@github.com/a/b").err(),
            Some(UrlProblem::Credentials)
        );
        assert!(parse("ssh://git@github.com/a/b").is_ok());
        assert_eq!(
            redact("https://user:token@github.com/a/b"),
            "https://***@github.com/a/b"
        );
        assert_eq!(redact("git@github.com:a/b"), "git@github.com:a/b");
    }

    #[test]
    fn classifies_forbidden_hosts_in_every_spelling() {
        for (host, what) in [
            ("localhost", "loopback"),
            ("api.localhost", "loopback"),
            ("127.0.0.1", "loopback"),
            ("127.1", "loopback"),
            ("2130706433", "loopback"),
            ("0x7f.1", "loopback"),
            ("0177.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0", "unspecified"),
            ("::", "unspecified"),
        ] {
            assert_eq!(
                check_host(host, &[]),
                Err(UrlProblem::ForbiddenHost(what)),
                "{host}"
            );
        }
        for host in [
            "github.com",
            "10.0.0.1",
            "2001:db8::1",
            "8.8.8.8",
            "0day.example",
        ] {
            assert!(check_host(host, &[]).is_ok(), "{host}");
        }
    }

    #[test]
    fn allow_list_matches_exact_and_wildcard() {
        let allowed = [
            HostPattern::new("github.com"),
            HostPattern::new("*.corp.example"),
        ];
        assert!(check_host("GitHub.com", &allowed).is_ok());
        assert!(check_host("git.corp.example", &allowed).is_ok());
        assert_eq!(
            check_host("corp.example", &allowed),
            Err(UrlProblem::HostNotAllowed)
        );
        assert_eq!(
            check_host("evilcorp.example", &allowed),
            Err(UrlProblem::HostNotAllowed)
        );
        assert_eq!(
            check_host("gitlab.com", &allowed),
            Err(UrlProblem::HostNotAllowed)
        );
    }

    #[test]
    fn branches_follow_check_ref_format() {
        for ok in [
            "main",
            "feature/x",
            "release-1.2",
            "fix-auth",
            "a@b",
            "v1.0",
        ] {
            assert!(check_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "/x",
            "x/",
            "a..b",
            "a b",
            "a~b",
            "a^b",
            "a:b",
            "a?b",
            "a*b",
            "a[b",
            "a\\b",
            "a@{b",
            "x.lock",
            "a/.b",
            "a//b",
            "x.",
            "@",
            "a\tb",
            "a\u{7f}b",
            "a/b.lock/c",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
    }
}
