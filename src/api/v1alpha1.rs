//! `vteam.ambient-code/v1alpha1`: served, deprecated. The union of every
//! shape clients have ever written, so nothing they send is pruned before the
//! webhooks can normalize it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::common::{ActiveWorkflow, GitRef, LlmSettings, McpServers, UserContext};
use super::status::{Condition, Phase, ReconciledRepo, ReconciledWorkflow, StoppedReason};

pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "vteam.ambient-code/v1alpha1";
/// The CRD's `deprecationWarning`: the apiserver sends it with every
/// request in this version.
pub const DEPRECATION_WARNING: &str =
    "vteam.ambient-code/v1alpha1 AgenticSession is deprecated; use vteam.ambient-code/v1alpha2";

/// A repository in either the flat form `{url, branch, autoPush, output}` or
/// the legacy form `{input: {url, branch}, output}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_push: Option<bool>,
    /// Deprecated: the legacy form's source location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<GitRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<GitRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BotAccount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSpec {
    /// Deprecated: renamed to `initialPrompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repos: Option<Vec<Repo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_repo_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_context: Option<UserContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_settings: Option<LlmSettings>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_on_run_finished: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_push_on_complete: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_variables: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<McpServers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_workflow: Option<ActiveWorkflow>,
    /// Removed feature; accepted with a warning and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_account: Option<BotAccount>,
    /// Removed feature; accepted with a warning and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_overrides: Option<ResourceOverrides>,
}

impl SessionSpec {
    pub fn repos(&self) -> &[Repo] {
        self.repos.as_deref().unwrap_or_default()
    }

    /// Absent means interactive: the platform removed the field and treats
    /// every session so; only an explicit `false` asks for batch semantics.
    pub fn is_interactive(&self) -> bool {
        self.interactive.unwrap_or(true)
    }
}

/// v1alpha1 status: every v1alpha2 field plus the legacy result fields.
/// The legacy names are snake_case on the wire, as the old operator wrote them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_repos: Option<Vec<ReconciledRepo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_workflow: Option<ReconciledWorkflow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<StoppedReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_restart_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// Restarts after RetriesExhausted (V26 bounds them by `--max-restarts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,

    // Legacy result fields (no v1alpha2 counterpart; stashed on conversion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(rename = "is_error", default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    #[serde(rename = "num_turns", default, skip_serializing_if = "Option::is_none")]
    pub num_turns: Option<i64>,
    #[serde(
        rename = "session_id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub session_id: Option<String>,
    #[serde(
        rename = "total_cost_usd",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub total_cost_usd: Option<Number>,
    /// Free-form token usage; the CRD preserves unknown fields here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(
        rename = "has_workspace_changes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub has_workspace_changes: Option<bool>,
    /// Per-repo results of the old operator; free-form objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repos: Option<Vec<Map<String, Value>>>,
}

impl SessionStatus {
    pub fn conditions(&self) -> &[Condition] {
        self.conditions.as_deref().unwrap_or_default()
    }
}
