//! Git URL and ref checks behind V1–V4 and V6. Pure string work, no DNS.
//!
//! Hosts are judged as git and libcurl will read them: numeric IPv4 in every
//! `inet_aton` spelling, IPv4 inside IPv6, case and trailing dots folded.
//! What could be read more than one way (percent-encoding, non-ASCII that
//! IDNA would map, IPv6 zone ids) is refused rather than guessed at. A
//! webhook sees names, not the addresses they resolve to at clone time: the
//! runner pods' NetworkPolicy is the other half (docs/rules.md).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Limits;

/// Why a URL is refused; each maps to one rule and one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlProblem {
    /// V1
    LeadingDash,
    /// V1: a host or user git would pass to ssh as an option.
    OptionLike,
    /// V1
    Fragment,
    /// V1: percent-encoded, non-ASCII or zone-scoped hosts.
    AmbiguousHost(&'static str),
    /// V1
    Whitespace,
    /// V1
    Scheme,
    /// V1: a service (MCP server) URL is https or http.
    ServiceScheme,
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
            UrlProblem::OptionLike => "host and user must not start with \"-\"".into(),
            UrlProblem::Fragment => "must not contain a fragment (\"#\")".into(),
            UrlProblem::AmbiguousHost(why) => format!("host must not be {why}"),
            UrlProblem::Whitespace => "must not contain whitespace or control characters".into(),
            UrlProblem::Scheme => "scheme must be https, http, ssh or git@host:path".into(),
            UrlProblem::ServiceScheme => "scheme must be https or http".into(),
            UrlProblem::NoHost => "must name a host".into(),
            UrlProblem::NoPath => "must name a repository path on the host".into(),
            UrlProblem::BadPort => "port must be a number from 1 to 65535".into(),
            UrlProblem::Credentials => {
                "must not contain credentials (use a git credential Secret)".into()
            }
            UrlProblem::ForbiddenHost(what) => format!("host must not be {what}"),
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
    if url.contains('#') {
        return Err(UrlProblem::Fragment);
    }
    for (prefix, scheme) in [
        ("https://", Scheme::Https),
        ("http://", Scheme::Http),
        ("ssh://", Scheme::Ssh),
    ] {
        if let Some(rest) = strip_prefix_ci(url, prefix) {
            return parse_hierarchical(scheme, rest, true);
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
        if host.starts_with('-') {
            return Err(UrlProblem::OptionLike);
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

/// A service's URL (an MCP server's): https or http, held to the same host
/// and credential rules as a git URL (V1–V3); any path, or none.
pub fn parse_service_url(url: &str) -> Result<GitUrl<'_>, UrlProblem> {
    if url.starts_with('-') {
        return Err(UrlProblem::LeadingDash);
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlProblem::Whitespace);
    }
    for (prefix, scheme) in [("https://", Scheme::Https), ("http://", Scheme::Http)] {
        if let Some(rest) = strip_prefix_ci(url, prefix) {
            return parse_hierarchical(scheme, rest, false);
        }
    }
    Err(UrlProblem::ServiceScheme)
}

fn parse_hierarchical(
    scheme: Scheme,
    rest: &str,
    need_path: bool,
) -> Result<GitUrl<'_>, UrlProblem> {
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
    if host.starts_with('-') || user.is_some_and(|u| u.starts_with('-')) {
        return Err(UrlProblem::OptionLike);
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
    {
        return Err(UrlProblem::BadPort);
    }
    let repo_path = path.trim_start_matches('/');
    if need_path && (repo_path.is_empty() || repo_path.starts_with(['?', '#'])) {
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

/// Cloud metadata services, by address (AWS, GCP, Azure, OpenStack,
/// DigitalOcean, Oracle: 169.254.169.254 is link-local already; Alibaba
/// 100.100.100.200; Azure's WireServer 168.63.129.16; Oracle Classic
/// 192.0.0.192; AWS over IPv6 fd00:ec2::254).
const METADATA_ADDRESSES: &[&str] = &[
    "100.100.100.200",
    "168.63.129.16",
    "192.0.0.192",
    "fd00:ec2::254",
];

/// Cloud metadata services, by name.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "metadata.tencentyun.com",
    "instance-data",
    "instance-data.ec2.internal",
];

const CLUSTER_INTERNAL: &str =
    "a cluster-internal name (a Service: name it in --allowed-git-host to allow it)";

/// The host as git and libcurl will look it up: lower case, no trailing
/// dot; refused if it could be read more than one way.
pub fn normalize_host(host: &str) -> Result<String, UrlProblem> {
    if host.contains('%') {
        return Err(if host.contains(':') {
            UrlProblem::AmbiguousHost("an IPv6 address with a zone id")
        } else {
            UrlProblem::AmbiguousHost("percent-encoded")
        });
    }
    if !host.is_ascii() {
        return Err(UrlProblem::AmbiguousHost(
            "non-ASCII (write it in its xn-- form)",
        ));
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || !host.chars().all(ok) {
        return Err(UrlProblem::AmbiguousHost(
            "anything but letters, digits, \"-\", \".\", \"_\" or an IPv6 address",
        ));
    }
    Ok(host)
}

/// V3: refuse hosts that reach the node, the cloud metadata service, the
/// cluster's own services, or a configured network; then the allow-list.
pub fn check_host(host: &str, limits: &Limits) -> Result<(), UrlProblem> {
    let host = normalize_host(host)?;
    let allowed = &limits.allowed_git_hosts;
    match forbidden_host_class(&host, limits) {
        // An in-cluster git server the platform names exactly is allowed.
        Some(CLUSTER_INTERNAL) if allowed.iter().any(|p| p.as_str() == host) => {}
        Some(what) => return Err(UrlProblem::ForbiddenHost(what)),
        None => {}
    }
    if !allowed.is_empty() && !allowed.iter().any(|p| p.matches(&host)) {
        return Err(UrlProblem::HostNotAllowed);
    }
    Ok(())
}

/// V3 for a service URL's host: the same forbidden hosts as git's, without
/// the git-host allow-list (which names git servers, not MCP servers).
pub fn check_service_host(host: &str, limits: &Limits) -> Result<(), UrlProblem> {
    let host = normalize_host(host)?;
    match forbidden_host_class(&host, limits) {
        Some(what) => Err(UrlProblem::ForbiddenHost(what)),
        None => Ok(()),
    }
}

/// The address a numeric host names, in any spelling git would accept.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and
        // NAT64 (64:ff9b::a.b.c.d) addresses reach the IPv4 inside.
        let seg = v6.segments();
        let embedded = Ipv4Addr::from((u128::from(v6) & 0xffff_ffff) as u32);
        let compatible =
            seg[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified();
        let nat64 = seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
        let inner = match v6.to_ipv4_mapped() {
            Some(v4) => Some(v4),
            None if compatible || nat64 => Some(embedded),
            None => None,
        };
        return Some(inner.map_or(IpAddr::V6(v6), IpAddr::V4));
    }
    parse_inet_aton(host).map(IpAddr::V4)
}

fn forbidden_host_class(host: &str, limits: &Limits) -> Option<&'static str> {
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("a loopback address");
    }
    if let Some(ip) = host_ip(host) {
        if METADATA_ADDRESSES
            .iter()
            .any(|m| m.parse::<IpAddr>().ok() == Some(ip))
        {
            return Some("a cloud metadata address");
        }
        let class = match ip {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
            IpAddr::V6(v6) if v6.is_unspecified() => Some("the unspecified address"),
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
            IpAddr::V6(_) => None,
        };
        if class.is_some() {
            return class;
        }
        if limits.denied_cidrs.iter().any(|net| net.contains(&ip)) {
            return Some("in a denied network (--deny-cidr)");
        }
        return None;
    }
    if METADATA_NAMES.contains(&host) {
        return Some("a cloud metadata name");
    }
    let domain = limits
        .cluster_domain
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let in_cluster = host.ends_with(".svc")
        || host.ends_with(".cluster.local")
        || (!domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}"))));
    // (A single label resolves through the pod's DNS search path, Services
    // first; it is not refused here, as tests and on-premises setups use
    // short names: the allow-list and the NetworkPolicy cover it.)
    if in_cluster {
        return Some(CLUSTER_INTERNAL);
    }
    None
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.octets()[0] == 0 {
        Some("the unspecified address")
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

    fn allowing(hosts: &[&str]) -> Limits {
        Limits {
            allowed_git_hosts: hosts.iter().map(|h| HostPattern::new(h)).collect(),
            ..Limits::default()
        }
    }

    const LOOPBACK: &str = "a loopback address";
    const LINK_LOCAL: &str = "a link-local address";
    const UNSPECIFIED: &str = "the unspecified address";
    const METADATA: &str = "a cloud metadata address";

    #[test]
    fn classifies_forbidden_hosts_in_every_spelling() {
        for (host, what) in [
            ("localhost", LOOPBACK),
            ("LocalHost.", LOOPBACK),
            ("api.localhost", LOOPBACK),
            ("127.0.0.1", LOOPBACK),
            ("127.0.0.1.", LOOPBACK),
            ("127.1", LOOPBACK),
            ("2130706433", LOOPBACK),
            ("0x7f.1", LOOPBACK),
            ("0X7F.0.0.1", LOOPBACK),
            ("0177.0.0.1", LOOPBACK),
            ("::1", LOOPBACK),
            ("::ffff:127.0.0.1", LOOPBACK),
            ("::ffff:7f00:1", LOOPBACK),
            ("::127.0.0.1", LOOPBACK),
            ("64:ff9b::127.0.0.1", LOOPBACK),
            ("169.254.169.254", LINK_LOCAL),
            ("0xa9fea9fe", LINK_LOCAL),
            ("fe80::1", LINK_LOCAL),
            ("::ffff:169.254.169.254", LINK_LOCAL),
            ("0.0.0.0", UNSPECIFIED),
            ("0", UNSPECIFIED),
            ("::", UNSPECIFIED),
            ("100.100.100.200", METADATA),
            ("168.63.129.16", METADATA),
            ("192.0.0.192", METADATA),
            ("fd00:ec2::254", METADATA),
            ("FD00:EC2:0:0:0:0:0:254", METADATA),
            ("metadata.google.internal", "a cloud metadata name"),
            ("Metadata.Google.Internal.", "a cloud metadata name"),
            ("metadata", "a cloud metadata name"),
            ("kubernetes.default.svc", CLUSTER_INTERNAL),
            ("gitea.git.svc.cluster.local", CLUSTER_INTERNAL),
        ] {
            assert_eq!(
                check_host(host, &Limits::default()),
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
            "xn--bcher-kva.example",
        ] {
            assert!(check_host(host, &Limits::default()).is_ok(), "{host}");
        }
    }

    #[test]
    fn hosts_that_could_be_read_two_ways_are_refused() {
        for (host, why) in [
            ("%31%32%37.0.0.1", "percent-encoded"),
            ("fe80::1%25eth0", "an IPv6 address with a zone id"),
            ("fe80::1%eth0", "an IPv6 address with a zone id"),
            (
                "\u{ff11}\u{ff12}\u{ff17}.0.0.1",
                "non-ASCII (write it in its xn-- form)",
            ),
            (
                "127\u{3002}0\u{3002}0\u{3002}1",
                "non-ASCII (write it in its xn-- form)",
            ),
            (
                "b\u{fc}cher.example",
                "non-ASCII (write it in its xn-- form)",
            ),
        ] {
            assert_eq!(
                check_host(host, &Limits::default()),
                Err(UrlProblem::AmbiguousHost(why)),
                "{host}"
            );
        }
    }

    #[test]
    fn the_issues_bypasses_are_all_refused() {
        let limits = Limits::default();
        for url in [
            "http://%31%32%37.0.0.1/x.git",
            "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/x.git",
            "ssh://git@[fe80::1%25eth0]/x.git",
            "https://100.100.100.200/x.git",
            "https://[fd00:ec2::254]/x.git",
            "https://gitea.git.svc/x.git",
            "https://gitea.git.svc.cluster.local/x.git",
            "https://metadata.google.internal/x.git",
            "git@-oProxyCommand=x:y",
            "ssh://-oProxyCommand=x@host/x.git",
            "ssh://git@-oProxyCommand=x/x.git",
            "https://github.com/acme/api.git#frag",
        ] {
            let verdict = parse(url).and_then(|u| check_host(u.host, &limits));
            assert!(verdict.is_err(), "{url} allowed");
        }
    }

    #[test]
    fn denied_networks_and_named_in_cluster_servers_are_configurable() {
        let limits = Limits {
            denied_cidrs: vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))],
            cluster_domain: "corp.k8s".into(),
            ..allowing(&["gitea.git.svc", "*.example.com"])
        };
        assert_eq!(
            check_host("10.1.2.3", &limits),
            Err(UrlProblem::ForbiddenHost(
                "in a denied network (--deny-cidr)"
            ))
        );
        assert_eq!(
            check_host("012.1", &limits),
            Err(UrlProblem::ForbiddenHost(
                "in a denied network (--deny-cidr)"
            ))
        );
        assert!(check_host("gitea.git.svc", &limits).is_ok());
        assert_eq!(
            check_host("git.ns.svc.corp.k8s", &limits),
            Err(UrlProblem::ForbiddenHost(CLUSTER_INTERNAL))
        );
        // A wildcard does not open the cluster, nor does anything open loopback.
        assert_eq!(
            check_host("localhost", &allowing(&["localhost"])),
            Err(UrlProblem::ForbiddenHost(LOOPBACK))
        );
    }

    /// `ip` written one of the ways `inet_aton` (so git and curl) reads it.
    fn spell_v4(ip: Ipv4Addr, parts: usize, radixes: &[u8; 4], upper: bool, dot: bool) -> String {
        let n = u32::from(ip);
        let o = ip.octets();
        let values: Vec<u32> = match parts {
            1 => vec![n],
            2 => vec![u32::from(o[0]), n & 0x00ff_ffff],
            3 => vec![u32::from(o[0]), u32::from(o[1]), n & 0xffff],
            _ => o.iter().map(|b| u32::from(*b)).collect(),
        };
        let text: Vec<String> = values
            .iter()
            .zip(radixes)
            .map(|(v, r)| match r % 3 {
                0 => v.to_string(),
                1 => format!("0x{v:x}"),
                _ => format!("0{v:o}"),
            })
            .collect();
        let mut host = text.join(".");
        if upper {
            host = host.to_ascii_uppercase();
        }
        if dot {
            host.push('.');
        }
        host
    }

    proptest::proptest! {
        #[test]
        fn every_spelling_of_a_forbidden_address_is_refused(
            net in 0usize..6,
            low in proptest::num::u32::ANY,
            parts in 1usize..=4,
            radixes in proptest::array::uniform4(0u8..3),
            upper in proptest::bool::ANY,
            dot in proptest::bool::ANY,
            wrap in 0usize..5,
        ) {
            // 127/8, 169.254/16, 0/8 and the metadata addresses.
            let ip = match net {
                0 => Ipv4Addr::from(0x7f00_0000 | (low & 0x00ff_ffff)),
                1 => Ipv4Addr::from(0xa9fe_0000 | (low & 0xffff)),
                2 => Ipv4Addr::from(low & 0x00ff_ffff),
                3 => Ipv4Addr::new(100, 100, 100, 200),
                4 => Ipv4Addr::new(168, 63, 129, 16),
                _ => Ipv4Addr::new(192, 0, 0, 192),
            };
            let host = match wrap {
                0 | 1 => spell_v4(ip, parts, &radixes, upper, dot),
                2 => format!("::ffff:{ip}"),
                3 => {
                    let n = u32::from(ip);
                    format!("::ffff:{:x}:{:x}", n >> 16, n & 0xffff)
                }
                _ => format!("64:ff9b::{ip}"),
            };
            let refused = check_host(&host, &Limits::default());
            proptest::prop_assert!(
                matches!(refused, Err(UrlProblem::ForbiddenHost(_))),
                "{} ({}) allowed: {:?}", host, ip, refused
            );
            // Percent-encoding any of it is refused outright.
            let encoded: String = host.bytes().map(|b| format!("%{b:02X}")).collect();
            proptest::prop_assert!(matches!(
                check_host(&encoded, &Limits::default()),
                Err(UrlProblem::AmbiguousHost(_))
            ));
        }
    }

    proptest::proptest! {
        // The parser takes any text without panicking, and whatever host it
        // lets through is one the normalizer reads one way.
        #[test]
        fn any_text_is_parsed_or_refused_never_panics(
            url in "(https?://|ssh://|git@|)[\\PC%@:\\[\\]/.#-]{0,40}",
        ) {
            if let Ok(u) = parse(&url) {
                let verdict = check_host(u.host, &Limits::default());
                if verdict.is_ok() {
                    proptest::prop_assert!(normalize_host(u.host).is_ok());
                    proptest::prop_assert!(u.host.is_ascii() && !u.host.contains('%'));
                    proptest::prop_assert!(!u.host.starts_with('-'));
                }
            }
        }
    }

    #[test]
    fn allow_list_matches_exact_and_wildcard() {
        let allowed = allowing(&["github.com", "*.corp.example"]);
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
