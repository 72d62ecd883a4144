//! `agentic-webhook certs`

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::certs;

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Directory for ca.crt, ca.key, tls.crt, tls.key (keys are written 0600).
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// DNS names for the serving certificate; repeatable. Default: the
    /// agentic-webhook Service in agentic-system (.svc and .svc.cluster.local).
    #[arg(long = "dns-name", value_name = "NAME")]
    dns_names: Vec<String>,
    /// IP addresses for the serving certificate; repeatable (e.g. 127.0.0.1).
    #[arg(long = "ip", value_name = "ADDR")]
    ips: Vec<IpAddr>,
    /// Validity of the new certificates, in days.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Replace a CA already in --out. The caBundles installed from the old
    /// one then no longer verify the webhook.
    #[arg(long, conflicts_with = "ca_cert")]
    force: bool,
    /// Issue only a new serving pair (tls.crt, tls.key) from this existing
    /// CA certificate; the installed caBundles stay valid.
    #[arg(long, requires = "ca_key", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// The key of --ca-cert.
    #[arg(long, requires = "ca_cert", value_name = "PEM")]
    ca_key: Option<PathBuf>,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub fn run(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    let lifetime = Duration::from_secs(args.days.max(1) * 86_400);
    let dns = if args.dns_names.is_empty() {
        certs::default_dns_names()
    } else {
        args.dns_names.clone()
    };
    let names = dns
        .iter()
        .cloned()
        .chain(args.ips.iter().map(ToString::to_string))
        .collect::<Vec<_>>()
        .join(", ");
    if let (Some(cert), Some(key)) = (&args.ca_cert, &args.ca_key) {
        let ca = certs::load_ca(&read(cert)?, &read(key)?).with_context(|| {
            format!("--ca-cert {} / --ca-key {}", cert.display(), key.display())
        })?;
        let pair = certs::issue_serving(&ca, &dns, &args.ips, lifetime)?;
        certs::write_pair(&args.out, &pair)?;
        println!(
            "wrote {dir}/tls.crt, {dir}/tls.key (valid {days} days) for {names}, signed by {ca}",
            dir = args.out.display(),
            days = args.days,
            ca = cert.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let existing = args.out.join("ca.key");
    anyhow::ensure!(
        args.force || !existing.exists(),
        "{} exists: a new CA would no longer match the caBundles installed from it. \
         Use --ca-cert {dir}/ca.crt --ca-key {dir}/ca.key for a new serving pair from it, \
         or --force to replace the CA",
        existing.display(),
        dir = args.out.display()
    );
    let ca = certs::generate_ca("agentic-webhook CA", lifetime)?;
    let pair = certs::issue_serving(&ca, &dns, &args.ips, lifetime)?;
    certs::write_dir(&args.out, &ca, &pair)?;
    println!(
        "wrote {dir}/ca.crt, {dir}/ca.key, {dir}/tls.crt, {dir}/tls.key (valid {days} days) for {names}",
        dir = args.out.display(),
        days = args.days,
    );
    Ok(ExitCode::SUCCESS)
}
