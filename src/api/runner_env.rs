//! Whose runner environment variables are whose. One list for V10 (a
//! session may not set these) and the pod builder (a session's variable
//! never replaces one of these, nor sets one of [`controls_process`]), so
//! the two can never disagree.

/// What the reconciler gives the runner pod's containers from the session
/// under the shipped runner contract (`manifests/base/runner-template.yaml`,
/// the ambient-code runner's): every variable it sets, less those it reads
/// from the session's own variables (`PARENT_SESSION_ID`). The reconciler
/// reads them from the contract; a test keeps this list equal to it.
pub const RECONCILER: &[&str] = &[
    "ACTIVE_WORKFLOW_BRANCH",
    "ACTIVE_WORKFLOW_GIT_URL",
    "ACTIVE_WORKFLOW_PATH",
    "AGENTIC_SESSION_NAME",
    "AGENTIC_SESSION_NAMESPACE",
    "AGUI_PORT",
    "AGUI_TOKEN",
    "BOT_TOKEN",
    "CUSTOM_MCP_SERVERS",
    "INITIAL_PROMPT",
    "IS_RESUME",
    "LLM_MAX_TOKENS",
    "LLM_MODEL",
    "LLM_TEMPERATURE",
    "MAIN_REPO_INDEX",
    "MAIN_REPO_NAME",
    "NAMESPACE",
    "PROJECT_NAME",
    "REPOS_JSON",
    "SESSION_ID",
    "SESSION_NAME",
    "TIMEOUT",
    "USER_ID",
    "USER_NAME",
];

/// What the ambient-code platform's operator sets in the runner pod's
/// init-hydrate and state-sync containers and never lets a session change
/// (its CRD's description of `environmentVariables`). Its S3 credentials
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) are protected only in
/// those containers: the runner container gets the session's, so a session
/// may set them (with a warning, see [`looks_like_credential`]).
pub const PLATFORM: &[&str] = &[
    "SESSION_NAME",
    "NAMESPACE",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "SYNC_INTERVAL",
];

/// A name a session's `environmentVariables` may not use.
pub fn is_reserved(name: &str) -> bool {
    RECONCILER.contains(&name) || PLATFORM.contains(&name)
}

/// Variables that steer the runner's processes or git rather than the
/// agent: loaders, interpreters, shells, proxies, trust stores and every
/// `GIT_*` (`GIT_CONFIG_COUNT`/`KEY_0`/`VALUE_0` set any git option, e.g.
/// `protocol.ext.allow=always`, which turns a repo URL into a command).
/// The platform team sets them in the runner pod template, if at all.
pub fn controls_process(name: &str) -> bool {
    const PREFIXES: &[&str] = &["GIT_", "LD_", "DYLD_", "PYTHON", "NPM_CONFIG_", "SSH_"];
    const EXACT: &[&str] = &[
        "PATH",
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "IFS",
        "NODE_OPTIONS",
        "NODE_PATH",
        "NODE_EXTRA_CA_CERTS",
        "PERL5OPT",
        "PERL5LIB",
        "RUBYOPT",
        "RUBYLIB",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GCONV_PATH",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "RES_OPTIONS",
    ];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&upper.as_str())
        || PREFIXES.iter().any(|p| upper.starts_with(p))
        || upper.ends_with("_PROXY")
}

/// Why a session may not set `name`, if it may not.
pub fn refused(name: &str) -> Option<&'static str> {
    if is_reserved(name) {
        Some("is reserved: the runner sets it")
    } else if controls_process(name) {
        Some(
            "controls the runner's processes or git (GIT_*, LD_*, *_PROXY, NODE_OPTIONS, PYTHON*, PATH, ...): set it in the runner pod template",
        )
    } else {
        None
    }
}

/// Names that carry secrets by convention: allowed, but every reader of
/// the session can read them, so V10 warns.
pub fn looks_like_credential(name: &str) -> bool {
    const EXACT: &[&str] = &["TOKEN", "SECRET", "PASSWORD", "API_KEY", "ACCESS_KEY"];
    const SUFFIXES: &[&str] = &[
        "_TOKEN",
        "_SECRET",
        "_SECRET_KEY",
        "_SECRET_ACCESS_KEY",
        "_PASSWORD",
        "_API_KEY",
        "_ACCESS_KEY",
        "_ACCESS_KEY_ID",
        "_CREDENTIALS",
    ];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&upper.as_str()) || SUFFIXES.iter().any(|s| upper.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_contracts_names_are_reserved_but_the_backends_own_are_not() {
        for name in [
            "SESSION_NAME",
            "S3_BUCKET",
            "SYNC_INTERVAL",
            "AGENTIC_SESSION_NAME",
            "REPOS_JSON",
            "ACTIVE_WORKFLOW_GIT_URL",
            "CUSTOM_MCP_SERVERS",
            "LLM_TEMPERATURE",
            "AGUI_TOKEN",
            "BOT_TOKEN",
            "IS_RESUME",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        // What the platform's backend itself writes into environmentVariables.
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "RUNNER_TYPE",
            "RUNNER_STATE_DIR",
            "PARENT_SESSION_ID",
            "SDK_OPTIONS",
            "JIRA_READ_ONLY_MODE",
        ] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn process_and_git_control_is_refused_and_the_platforms_variables_are_not() {
        for name in [
            "GIT_CONFIG_COUNT",
            "GIT_CONFIG_KEY_0",
            "GIT_SSH_COMMAND",
            "LD_PRELOAD",
            "https_proxy",
            "NO_PROXY",
            "NODE_OPTIONS",
            "PYTHONSTARTUP",
            "PATH",
            "BASH_ENV",
        ] {
            assert!(refused(name).is_some(), "{name}");
        }
        for name in [
            "RUNNER_TYPE",
            "RUNNER_STATE_DIR",
            "PARENT_SESSION_ID",
            "SDK_OPTIONS",
            "JIRA_READ_ONLY_MODE",
            "AWS_ACCESS_KEY_ID",
            "LOG_LEVEL",
            "GITHUB_ORG",
        ] {
            assert_eq!(refused(name), None, "{name}");
        }
    }

    #[test]
    fn credential_names_are_recognised() {
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "GITHUB_TOKEN",
            "ANTHROPIC_API_KEY",
            "db_password",
        ] {
            assert!(looks_like_credential(name), "{name}");
        }
        for name in [
            "RUNNER_TYPE",
            "SDK_OPTIONS",
            "TOKENIZER",
            "PARENT_SESSION_ID",
        ] {
            assert!(!looks_like_credential(name), "{name}");
        }
    }
}
