//! Command line: one binary, one subcommand per job.

mod audit;
mod certs;
pub(crate) mod check;
mod convert;
pub(crate) mod input;
pub mod manifests;
pub mod migrate;
mod reconcile;
mod render;
pub(crate) mod review;
pub(crate) mod runner;
mod serve;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::admission::git::HostPattern;
use crate::admission::{Config, Limits, Principals};
use crate::api::field::Rule;

#[derive(Parser, Debug)]
#[command(
    name = "agentic-webhook",
    version,
    long_version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("AGENTIC_GIT_COMMIT"),
        ", built ",
        env!("AGENTIC_BUILD_DATE"),
        ")"
    ),
    about = "Admission and conversion webhook, and lifecycle reconciler, for AgenticSession (vteam.ambient-code)"
)]
pub struct Cli {
    /// Log format (RUST_LOG sets the level, default info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "AGENTIC_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a CA and a serving certificate signed by it (PEM files).
    Certs(certs::CertsArgs),
    /// Serve /mutate, /validate and /convert over HTTPS, probes over HTTP.
    Serve(Box<serve::ServeArgs>),
    /// Run mutate-then-validate offline on sessions (files, directories, stdin), as the webhook would.
    Review(review::ReviewArgs),
    /// Judge every stored session by today's rules (read-only), as review does.
    Audit(audit::AuditArgs),
    /// Check recorded expectations (decision, rule ids, warnings) against the rules.
    Verify(verify::VerifyArgs),
    /// Convert session files between v1alpha1 and v1alpha2 (YAML to stdout).
    Convert(convert::ConvertArgs),
    /// Print the install YAML with the CA bundle filled in.
    Manifests(manifests::ManifestsArgs),
    /// Rewrite every stored session in v1alpha2, then drop v1alpha1 from storedVersions.
    Migrate(migrate::MigrateArgs),
    /// Run the lifecycle controller for AgenticSessions (owns runner pods and services).
    Reconcile(reconcile::ReconcileArgs),
    /// Print, offline, the objects the reconciler would create for sessions (runner pod, Service, Secret, ServiceAccount, RoleBinding, NetworkPolicies).
    Render(Box<render::RenderArgs>),
    /// Print the version, the git commit, the build date and the compiler.
    Version(VersionArgs),
    /// Print a shell completion script (e.g. `source <(agentic-webhook completion bash)`).
    Completion(CompletionArgs),
}

#[derive(clap::Args, Debug)]
struct VersionArgs {
    /// `text` or `json`.
    #[arg(short, long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
}

#[derive(clap::Args, Debug)]
struct CompletionArgs {
    shell: clap_complete::Shell,
}

/// What `version` prints, from build.rs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("AGENTIC_GIT_COMMIT");
pub const BUILD_DATE: &str = env!("AGENTIC_BUILD_DATE");
pub const RUSTC: &str = env!("AGENTIC_RUSTC");

fn version(args: &VersionArgs) -> ExitCode {
    if args.output == "json" {
        println!(
            "{}",
            serde_json::json!({"version": VERSION, "gitCommit": GIT_COMMIT,
                               "buildDate": BUILD_DATE, "rustc": RUSTC})
        );
    } else {
        println!(
            "agentic-webhook {VERSION}\ngit commit: {GIT_COMMIT}\nbuild date: {BUILD_DATE}\nrustc: {RUSTC}"
        );
    }
    ExitCode::SUCCESS
}

fn completion(args: &CompletionArgs) -> ExitCode {
    use clap::CommandFactory as _;
    use std::io::Write as _;
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "agentic-webhook",
        &mut script,
    );
    if args.shell == clap_complete::Shell::Bash {
        // clap_complete 4.6 spells the hyphen of `agentic-webhook` two
        // ways in its bash case labels (`agentic__webhook__subcmd__x` set,
        // `agentic__subcmd__webhook__subcmd__x` matched), so no
        // subcommand's flags would complete. Make the labels agree.
        let fixed = String::from_utf8_lossy(&script)
            .replace("agentic__subcmd__webhook", "agentic__webhook")
            .into_bytes();
        script = fixed;
    }
    // A closed pipe (`| head`) is the reader's choice, not an error.
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: writing the completion script: {e}");
            ExitCode::from(2)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// The webhook names in the shipped configurations (and in `review`'s output).
pub mod review_names {
    pub const MUTATING: &str = "mutate.agenticsessions.vteam.ambient-code";
    pub const VALIDATING: &str = "validate.agenticsessions.vteam.ambient-code";
}

/// Which cluster a command talks to (migrate, reconcile, serve --manage-certs).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, else the
    /// pod's service account].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Kubeconfig context [default: its current-context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl KubeArgs {
    pub fn target(&self) -> crate::apiclient::Target {
        crate::apiclient::Target {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }
}

/// Rule settings shared by `serve` and `review`.
#[derive(clap::Args, Debug, Clone)]
pub struct PolicyArgs {
    /// V5: most repos one session may list.
    #[arg(long, default_value_t = 20, env = "AGENTIC_MAX_REPOS")]
    pub max_repos: usize,
    /// V26: restarts (desired-phase Running) of a session whose retries
    /// are exhausted; past them only a controller principal may restart it.
    #[arg(long, default_value_t = 3, env = "AGENTIC_MAX_RESTARTS")]
    pub max_restarts: i64,
    /// V7: largest initialPrompt (and legacy prompt), in bytes.
    #[arg(long, default_value_t = 100 * 1024, env = "AGENTIC_MAX_PROMPT_BYTES")]
    pub max_prompt_bytes: usize,
    /// V3: git hosts sessions may use (exact or `*.suffix`); repeatable. None = any host.
    #[arg(long = "allowed-git-host", value_name = "HOST")]
    pub allowed_git_hosts: Vec<String>,
    /// V3: a network (CIDR) no git URL's literal address may be in;
    /// repeatable. Loopback, link-local and metadata addresses are always denied.
    #[arg(long = "deny-cidr", value_name = "CIDR", value_parser = clap::value_parser!(ipnet::IpNet))]
    pub denied_cidrs: Vec<ipnet::IpNet>,
    /// V3: the cluster's DNS domain; git hosts under it (and `*.svc`,
    /// `*.cluster.local`, single labels) are the cluster's own Services.
    #[arg(long, default_value = "cluster.local", env = "AGENTIC_CLUSTER_DOMAIN")]
    pub cluster_domain: String,
    /// V17–V19: user names of controller principals; repeatable.
    #[arg(long = "controller-user", value_name = "USER")]
    pub controller_users: Vec<String>,
    /// V17–V19: groups whose members are controller principals; repeatable.
    #[arg(long = "controller-group", value_name = "GROUP")]
    pub controller_groups: Vec<String>,
    /// V17–V18: the namespace of the ambient-code platform's operator
    /// (`agentic-operator`) and backend (`backend-api`) service accounts,
    /// which get the rights their code needs (docs/platform.md); `""` when
    /// the platform is not installed.
    #[arg(
        long,
        value_name = "NAMESPACE",
        default_value = crate::admission::PLATFORM_NAMESPACE,
        env = "AGENTIC_PLATFORM_NAMESPACE"
    )]
    pub platform_namespace: String,
    /// Rule ids whose denials become warnings (e.g. `V3` while rolling out
    /// a git-host allow-list); repeatable or comma-separated. Counted as
    /// `agentic_webhook_denials_total{enforcement="warn"}`.
    #[arg(long = "warn-only", value_name = "RULE", value_delimiter = ',', value_parser = rule_id)]
    pub warn_only: Vec<Rule>,
}

fn rule_id(text: &str) -> Result<Rule, String> {
    match Rule::from_id(text) {
        Some(Rule::Schema) => Err("schema errors cannot be warn-only".to_owned()),
        // A warning would let anyone write status, the operator's
        // annotations, someone else's user context or another session.
        Some(rule) if rule.is_authorization() => Err(format!(
            "{rule} decides who may write what (V17–V20, V25, V26) and cannot be warn-only: \
             turning it off hands the status, the runner's credentials and other users' \
             sessions to anyone who may write a session"
        )),
        Some(rule) => Ok(rule),
        None => Err(format!(
            "{text:?} is not a rule id that can deny (V1 to V26 but V12, V13, V16; docs/rules.md)"
        )),
    }
}

impl PolicyArgs {
    pub fn config(&self) -> Config {
        Config {
            limits: Limits {
                max_repos: self.max_repos,
                max_prompt_bytes: self.max_prompt_bytes,
                max_restarts: self.max_restarts,
                allowed_git_hosts: self
                    .allowed_git_hosts
                    .iter()
                    .map(|h| HostPattern::new(h))
                    .collect(),
                denied_cidrs: self.denied_cidrs.clone(),
                cluster_domain: self.cluster_domain.clone(),
            },
            principals: Principals {
                users: self.controller_users.clone(),
                groups: self.controller_groups.clone(),
                platform_namespace: Some(self.platform_namespace.clone())
                    .filter(|ns| !ns.is_empty()),
            },
            warn_only: self.warn_only.clone(),
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Check that `args` (without the program name) parse as this binary's
/// command line: the manifests tests use it on the Deployments' args.
pub fn check_args(args: &[String]) -> Result<(), String> {
    let argv = std::iter::once("agentic-webhook".to_owned()).chain(args.iter().cloned());
    Cli::try_parse_from(argv)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Certs(args) => certs::run(&args),
        Command::Serve(args) => serve::run(*args),
        Command::Review(args) => review::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Manifests(args) => manifests::run(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::Reconcile(args) => reconcile::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Version(args) => Ok(version(&args)),
        Command::Completion(args) => Ok(completion(&args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
