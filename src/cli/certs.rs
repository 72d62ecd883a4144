//! `agentic-webhook certs`

use std::net::IpAddr;
use std::path::PathBuf;
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
    /// Validity of both certificates, in days.
    #[arg(long, default_value_t = 365)]
    days: u64,
}

pub fn run(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    let lifetime = Duration::from_secs(args.days.max(1) * 86_400);
    let dns = if args.dns_names.is_empty() {
        certs::default_dns_names()
    } else {
        args.dns_names.clone()
    };
    let ca = certs::generate_ca("agentic-webhook CA", lifetime)?;
    let pair = certs::issue_serving(&ca, &dns, &args.ips, lifetime)?;
    certs::write_dir(&args.out, &ca, &pair)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {dir}/ca.crt, {dir}/ca.key, {dir}/tls.crt, {dir}/tls.key (valid {days} days) for {names}",
        dir = args.out.display(),
        days = args.days,
        names = dns
            .iter()
            .cloned()
            .chain(args.ips.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
