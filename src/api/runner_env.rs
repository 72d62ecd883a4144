//! Whose runner environment variables are whose. One list for V10 (a
//! session may not set these) and the pod builder (a session's variable
//! never replaces one of these, nor sets one of [`controls_process`]), so
//! the two can never disagree.

/// What this product's reconciler gives the runner container from the
/// session and its attempt.
pub const RECONCILER: &[&str] = &[
    "SESSION_NAME",
    "NAMESPACE",
    "ATTEMPT",
    "INITIAL_PROMPT",
    "REPOS",
    "MAIN_REPO",
    "INTERACTIVE",
    "RUNNER_PORT",
    "LLM_MODEL",
    "LLM_TEMPERATURE",
    "LLM_MAX_TOKENS",
    "TIMEOUT_SECONDS",
    "INACTIVITY_TIMEOUT_SECONDS",
    "STOP_ON_RUN_FINISHED",
    "AUTO_PUSH_ON_COMPLETE",
    "MCP_SERVERS",
    // From the reconciler's Secret: the token notices carry.
    "AGUI_TOKEN",
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
    fn the_platforms_s3_names_are_reserved_but_its_s3_credentials_are_the_sessions() {
        for name in [
            "SESSION_NAME",
            "S3_BUCKET",
            "SYNC_INTERVAL",
            "REPOS",
            "MCP_SERVERS",
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
