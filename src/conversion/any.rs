//! What a stored object may really contain, whatever its `apiVersion` says.
//!
//! The platform once renamed fields and reshaped repos without bumping the
//! version, and CRDs that preserved unknown fields stored those shapes under
//! the `v1alpha2` label (the apiserver captures show exactly this). So a
//! source spec is read as the union of both versions and normalized to the
//! hub; the label only decides which fields are native to the source.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::api::common::{ActiveWorkflow, LlmSettings, McpServers, UserContext};
use crate::api::v1alpha1::{BotAccount, Repo, ResourceOverrides};

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnySpec {
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub initial_prompt: Option<String>,
    #[serde(default)]
    pub repos: Option<Vec<Repo>>,
    #[serde(default)]
    pub main_repo_index: Option<i64>,
    #[serde(default)]
    pub main_repo: Option<String>,
    #[serde(default)]
    pub interactive: Option<bool>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub user_context: Option<UserContext>,
    #[serde(default)]
    pub llm_settings: Option<LlmSettings>,
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub inactivity_timeout: Option<i64>,
    #[serde(default)]
    pub inactivity_timeout_seconds: Option<i64>,
    #[serde(default)]
    pub stop_on_run_finished: Option<bool>,
    #[serde(default)]
    pub auto_push_on_complete: Option<bool>,
    #[serde(default)]
    pub environment_variables: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub mcp_servers: Option<McpServers>,
    #[serde(default)]
    pub active_workflow: Option<ActiveWorkflow>,
    #[serde(default)]
    pub bot_account: Option<BotAccount>,
    #[serde(default)]
    pub resource_overrides: Option<ResourceOverrides>,
}

impl From<crate::api::v1alpha1::SessionSpec> for AnySpec {
    fn from(s: crate::api::v1alpha1::SessionSpec) -> Self {
        let crate::api::v1alpha1::SessionSpec {
            prompt,
            initial_prompt,
            repos,
            main_repo_index,
            interactive,
            display_name,
            user_context,
            llm_settings,
            timeout,
            inactivity_timeout,
            stop_on_run_finished,
            auto_push_on_complete,
            environment_variables,
            mcp_servers,
            active_workflow,
            bot_account,
            resource_overrides,
        } = s;
        AnySpec {
            prompt,
            initial_prompt,
            repos,
            main_repo_index,
            main_repo: None,
            interactive,
            display_name,
            user_context,
            llm_settings,
            timeout,
            timeout_seconds: None,
            inactivity_timeout,
            inactivity_timeout_seconds: None,
            stop_on_run_finished,
            auto_push_on_complete,
            environment_variables,
            mcp_servers,
            active_workflow,
            bot_account,
            resource_overrides,
        }
    }
}
