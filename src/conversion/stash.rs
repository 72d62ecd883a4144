//! The conversion stash: values with no counterpart in the target version,
//! kept as JSON in the annotation `vteam.ambient-code/conversion-data`.
//! Written only when something needs keeping; each value is removed as soon
//! as a conversion can restore it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::api::common::GitRef;
use crate::api::status::Phase;
use crate::api::v1alpha1::{BotAccount, ResourceOverrides};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stash {
    #[serde(default, skip_serializing_if = "SpecStash::is_empty")]
    pub spec: SpecStash,
    #[serde(default, skip_serializing_if = "StatusStash::is_empty")]
    pub status: StatusStash,
    /// Keys written by another release of this webhook, kept verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A legacy `input` that stood beside a flat `url` (v1alpha1 only), keyed
/// by the url it belonged to so it is never restored onto another repo.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoStash {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<GitRef>,
    /// A flat `branch` that disagreed with the legacy `input.branch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecStash {
    /// v1alpha1 `prompt` that differed from a non-empty `initialPrompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// v1alpha1 `mainRepoIndex` that `mainRepo` cannot express (out of range,
    /// or pointing at the second of two repos with the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_repo_index: Option<i64>,
    /// v1alpha2 `mainRepo` that names no repo, so has no index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_account: Option<BotAccount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_overrides: Option<ResourceOverrides>,
    /// By repo index.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub repos: BTreeMap<String, RepoStash>,
    /// Legacy values that contradicted their v1alpha2 counterpart in a
    /// mislabelled stored object (field -> value). Kept, never restored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conflicts: BTreeMap<String, Value>,
}

impl SpecStash {
    pub fn is_empty(&self) -> bool {
        *self == SpecStash::default()
    }
}

/// v1alpha1's legacy status fields and its `Error` phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusStash {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repos: Option<Vec<Map<String, Value>>>,
}

impl StatusStash {
    pub fn is_empty(&self) -> bool {
        *self == StatusStash::default()
    }
}

impl Stash {
    pub fn is_empty(&self) -> bool {
        self.spec.is_empty() && self.status.is_empty() && self.other.is_empty()
    }

    /// Parse the annotation value. A value this release cannot read is an
    /// error, never silently dropped.
    pub fn parse(annotation: &str) -> Result<Stash, serde_json::Error> {
        serde_json::from_str(annotation)
    }

    /// Canonical JSON (sorted keys, compact), so a round trip is byte-exact.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}
