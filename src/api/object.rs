//! A whole `AgenticSession` as admission sees it: the metadata the rules read
//! plus typed spec and status. `managedFields` and the rest of the metadata
//! are skipped while decoding (never re-encoded: mutation patches the raw
//! object and conversion passes metadata through as raw JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{v1alpha1, v1alpha2};

/// The metadata fields the rules read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An `AgenticSession` with typed spec and status of one version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session<Spec, Status> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Absent metadata decodes as empty: an apiserver server-side-apply bug
    /// has sent objects without it.
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub spec: Option<Spec>,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

pub type SessionV1 = Session<v1alpha1::SessionSpec, v1alpha1::SessionStatus>;
pub type SessionV2 = Session<v1alpha2::SessionSpec, v1alpha2::SessionStatus>;
