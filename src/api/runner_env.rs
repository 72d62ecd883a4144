//! Whose runner environment variables are whose. One list for V10 (a
//! session may not set these) and the pod builder (a session's variable
//! never replaces one of these), so the two can never disagree.

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
