//! Status types shared by both versions: phase, conditions and the
//! reconciler's bookkeeping. v1alpha1 adds its legacy result fields on top
//! (see `v1alpha1::SessionStatus`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string enum that keeps values it does not know, so a decode never fails
/// on them and an encode writes them back unchanged; validation reports them.
macro_rules! open_string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value outside the known set, kept verbatim.
            Other(String),
        }

        impl $name {
            pub const KNOWN: &'static [&'static str] = &[$($text),+];

            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s,
                }
            }

            pub fn parse(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Ok(Self::parse(&s))
            }
        }
    };
}

open_string_enum! {
    /// Session phase. `Error` exists only in v1alpha1 (legacy); v1alpha2 says `Failed`.
    Phase {
        Pending => "Pending",
        Creating => "Creating",
        Running => "Running",
        Stopping => "Stopping",
        Stopped => "Stopped",
        Completed => "Completed",
        Failed => "Failed",
        Error => "Error",
    }
}

open_string_enum! {
    ConditionStatus {
        True => "True",
        False => "False",
        Unknown => "Unknown",
    }
}

open_string_enum! {
    StoppedReason {
        User => "user",
        Inactivity => "inactivity",
    }
}

impl Phase {
    /// The v1alpha2 phases, in lifecycle order.
    pub const V1ALPHA2: &'static [&'static str] = &[
        "Pending",
        "Creating",
        "Running",
        "Stopping",
        "Stopped",
        "Completed",
        "Failed",
    ];

    /// Phases in which a runner pod may exist and the spec is frozen (V14).
    pub fn is_active(&self) -> bool {
        matches!(self, Phase::Creating | Phase::Running | Phase::Stopping)
    }

    /// Terminal until someone asks for a restart.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Phase::Stopped | Phase::Completed | Phase::Failed | Phase::Error
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339; kept as written so a round trip is byte-exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

open_string_enum! {
    /// `status.reconciledRepos[].status`, as the platform's operator writes it.
    RepoState {
        Cloning => "Cloning",
        Ready => "Ready",
        Failed => "Failed",
    }
}

open_string_enum! {
    /// `status.reconciledWorkflow.status`, as the platform's operator writes it.
    WorkflowState {
        Cloning => "Cloning",
        Active => "Active",
        Failed => "Failed",
    }
}

/// A repository as the runner last applied it. The fields after `branch`
/// are the platform's (its operator and UI read them; pruning them on a
/// status write would lose what the UI shows).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconciledRepo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The platform marks it deprecated in favour of `currentActiveBranch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_active_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RepoState>,
    /// RFC 3339, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloned_at: Option<String>,
}

/// The workflow as the runner last acknowledged it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconciledWorkflow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WorkflowState>,
    /// RFC 3339, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
}

/// Look a condition up by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
