//! Typed models of `AgenticSession` in both served versions.
//!
//! Pure data: no I/O. Both versions decode every field SPEC section 2 lists;
//! maps the CRD marks `x-kubernetes-preserve-unknown-fields` are kept as JSON.

pub mod common;
pub(crate) mod decode;
pub(crate) mod field;
pub(crate) mod object;
pub mod resource;
pub(crate) mod review;
pub mod runner_env;
pub mod status;
pub mod v1alpha1;
pub mod v1alpha2;

pub use object::{Meta, Session, SessionV1, SessionV2};

pub const GROUP: &str = "vteam.ambient-code";
pub const KIND: &str = "AgenticSession";
pub const PLURAL: &str = "agenticsessions";

/// Annotations with meaning to this product.
pub(crate) mod annotations {
    /// Values with no counterpart in the other version (JSON).
    pub const CONVERSION_DATA: &str = "vteam.ambient-code/conversion-data";
    /// `Running` or `Stopped`: what the user wants; cleared once acted on.
    pub const DESIRED_PHASE: &str = "ambient-code.io/desired-phase";
    pub const RUNNER_TOKEN_SECRET: &str = "ambient-code.io/runner-token-secret";
    pub const RUNNER_SA: &str = "ambient-code.io/runner-sa";
    pub const TOKEN_REFRESHED_AT: &str = "ambient-code.io/token-refreshed-at";
    pub const ATTEMPT: &str = "ambient-code.io/attempt";
    /// When a stop was asked for (the platform's backend sets it beside
    /// `desired-phase: Stopped`).
    pub const STOP_REQUESTED_AT: &str = "ambient-code.io/stop-requested-at";
    /// The session whose runner created this one (set by the mutating
    /// webhook on a runner's CREATE): that runner may stop it (V20).
    pub const CREATED_BY_RUNNER: &str = "vteam.ambient-code/created-by-runner";

    /// The platform operator's bookkeeping: its and the controllers' (V18).
    pub const PLATFORM_OWNED: &[&str] = &[RUNNER_TOKEN_SECRET, RUNNER_SA, TOKEN_REFRESHED_AT];
    /// This product's bookkeeping: only controller principals' (V18).
    pub const PRODUCT_OWNED: &[&str] = &[ATTEMPT, CONVERSION_DATA, CREATED_BY_RUNNER];
}

/// A served version of the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    V1Alpha1,
    V1Alpha2,
}

impl Version {
    pub const ALL: [Version; 2] = [Version::V1Alpha1, Version::V1Alpha2];

    /// From a bare version (`v1alpha2`).
    pub fn from_version(v: &str) -> Option<Self> {
        match v {
            v1alpha1::VERSION => Some(Version::V1Alpha1),
            v1alpha2::VERSION => Some(Version::V1Alpha2),
            _ => None,
        }
    }

    /// From a full apiVersion (`vteam.ambient-code/v1alpha2`).
    pub fn from_api_version(api_version: &str) -> Option<Self> {
        match api_version {
            v1alpha1::API_VERSION => Some(Version::V1Alpha1),
            v1alpha2::API_VERSION => Some(Version::V1Alpha2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1Alpha1 => v1alpha1::VERSION,
            Version::V1Alpha2 => v1alpha2::VERSION,
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Version::V1Alpha1 => v1alpha1::API_VERSION,
            Version::V1Alpha2 => v1alpha2::API_VERSION,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
