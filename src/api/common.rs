//! Spec fragments that are identical in v1alpha1 and v1alpha2.
//!
//! Every field is optional and skipped when absent, so a decode/encode cycle
//! reproduces what the client wrote (absent stays absent, `[]` stays `[]`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// A git location: `repos[].output`, and the legacy `repos[].input`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Kept as a JSON number so `1` stays `1` (not `1.0`) across a round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServers {
    /// Server name to free-form configuration; the CRD preserves unknown fields here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveWorkflow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The branch the CRD defaults a repository or workflow to.
pub const DEFAULT_BRANCH: &str = "main";

/// The name of a repository: the last path segment of its URL without `.git`
/// (`git@github.com:org/api.git` -> `api`). Total on every string.
pub fn repo_name(url: &str) -> &str {
    let trimmed = url.trim().trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
    last.strip_suffix(".git").unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::repo_name;

    #[test]
    fn repo_name_is_last_segment_without_git_suffix() {
        assert_eq!(repo_name("git@github.com:org/api.git"), "api");
        assert_eq!(repo_name("git@github.com:api.git"), "api");
        assert_eq!(repo_name("https://github.com/acme/web"), "web");
        assert_eq!(repo_name("https://github.com/acme/web/"), "web");
        assert_eq!(repo_name("ssh://git@host:2222/x/y.git"), "y");
        assert_eq!(repo_name(" https://h/a/b.git "), "b");
        assert_eq!(repo_name(""), "");
    }
}
