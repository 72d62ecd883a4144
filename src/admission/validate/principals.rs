//! Who may do what, V17–V21. Controller principals come from flags
//! (`--controller-user`, `--controller-group`).

use std::collections::BTreeMap;

use crate::admission::Principals;
use crate::admission::field::{BadValue, FieldError, FieldPath, Rule};
use crate::admission::review::UserInfo;
use crate::api::annotations::{DESIRED_PHASE, OPERATOR_OWNED};
use crate::api::common::UserContext;

const SA_PREFIX: &str = "system:serviceaccount:";
const RUNNER_SA_PREFIX: &str = "ambient-session-";

pub const DESIRED_PHASES: &[&str] = &["Running", "Stopped"];

/// V17: only controllers write `status`.
pub fn check_status_writer(p: &Principals, user: &UserInfo) -> Option<FieldError> {
    (!p.is_controller(user)).then(|| {
        FieldError::forbidden(
            Rule::V17,
            FieldPath::new("status"),
            format!(
                "only controller principals may update the status subresource (user {:?})",
                user.username
            ),
        )
    })
}

type Annotations = BTreeMap<String, String>;

/// V18: operator-owned annotations are the controller's to add, change or remove.
pub fn check_owned_annotations(
    p: &Principals,
    user: &UserInfo,
    old: Option<&Annotations>,
    new: Option<&Annotations>,
) -> Vec<FieldError> {
    if p.is_controller(user) {
        return Vec::new();
    }
    let get = |m: Option<&Annotations>, k: &str| m.and_then(|m| m.get(k)).cloned();
    OPERATOR_OWNED
        .iter()
        .filter(|k| get(old, k) != get(new, k))
        .map(|k| {
            FieldError::forbidden(
                Rule::V18,
                FieldPath::new("metadata.annotations").key(k),
                "only controller principals may add, change or remove this annotation",
            )
        })
        .collect()
}

/// V19: the user context is fixed at creation.
pub fn check_user_context(
    p: &Principals,
    user: &UserInfo,
    old: Option<&UserContext>,
    new: Option<&UserContext>,
) -> Option<FieldError> {
    (old != new && !p.is_controller(user)).then(|| {
        FieldError::forbidden(
            Rule::V19,
            FieldPath::new("spec.userContext"),
            "may not change after creation",
        )
    })
}

/// The `(namespace, session)` a runner service account belongs to.
pub fn runner_scope(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(SA_PREFIX)?;
    let (ns, sa) = rest.split_once(':')?;
    let session = sa.strip_prefix(RUNNER_SA_PREFIX)?;
    Some((ns, session))
}

/// V20: a runner may write only its own session.
pub fn check_runner_scope(user: &UserInfo, namespace: &str, name: &str) -> Option<FieldError> {
    let (ns, session) = runner_scope(&user.username)?;
    (ns != namespace || session != name).then(|| {
        FieldError::forbidden(
            Rule::V20,
            FieldPath::new("metadata.name"),
            format!(
                "runner service account {:?} may write only session {ns}/{session}",
                user.username
            ),
        )
    })
}

/// V21
pub fn check_desired_phase(annotations: Option<&Annotations>) -> Option<FieldError> {
    let value = annotations?.get(DESIRED_PHASE)?;
    (!DESIRED_PHASES.contains(&value.as_str())).then(|| {
        FieldError::not_supported(
            Rule::V21,
            FieldPath::new("metadata.annotations").key(DESIRED_PHASE),
            BadValue::str(value),
            DESIRED_PHASES,
        )
    })
}
