//! Who may do what, V17–V21. Controller principals come from flags
//! (`--controller-user`, `--controller-group`).

use std::collections::BTreeMap;

use crate::admission::Principals;
use crate::admission::review::UserInfo;
use crate::api::annotations::{DESIRED_PHASE, OPERATOR_OWNED};
use crate::api::common::UserContext;
use crate::api::field::{BadValue, FieldError, FieldPath, Rule};

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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::admission::testkit::*;
    use crate::api::Version::{V1Alpha1, V1Alpha2};

    const FORBIDDEN: &str = "FieldValueForbidden";

    fn obj(annotations: Value) -> Value {
        let mut o = session(
            V1Alpha2,
            json!({"initialPrompt": "p", "userContext": {"userId": "u1"}}),
        );
        o["metadata"]["annotations"] = annotations;
        o
    }

    fn status_write(old_phase: &str, new_phase: &str) -> Case {
        let base = session(V1Alpha2, json!({"initialPrompt": "p"}));
        Case::update(
            V1Alpha2,
            with_status(base.clone(), json!({"phase": old_phase})),
            with_status(base, json!({"phase": new_phase})),
        )
        .status()
    }

    #[test]
    fn v17_a_user_cannot_write_status() {
        let v = status_write("Pending", "Creating").by("alice").validate();
        assert_denied(&v, 403, &[("status", FORBIDDEN)], &["V17"]);
        assert_eq!(
            message(&v),
            r#"status: Forbidden: only controller principals may update the status subresource (user "alice")"#
        );
    }

    #[test]
    fn v17_the_controller_user_or_group_may_write_status() {
        assert_allowed(
            &status_write("Pending", "Creating")
                .by(CONTROLLER)
                .validate(),
        );
        assert_allowed(
            &status_write("Pending", "Creating")
                .by("someone")
                .groups(&["agentic:controllers"])
                .validate(),
        );
    }

    #[test]
    fn v18_users_cannot_touch_operator_annotations() {
        let old = obj(json!({"note": "x"}));
        let new = obj(json!({"note": "x", "ambient-code.io/attempt": "2"}));
        let v = Case::update(V1Alpha2, old.clone(), new.clone()).validate();
        assert_denied(
            &v,
            403,
            &[("metadata.annotations[ambient-code.io/attempt]", FORBIDDEN)],
            &["V18"],
        );
        // Removing one is a change too.
        let v = Case::update(
            V1Alpha2,
            obj(json!({"vteam.ambient-code/conversion-data": "{}"})),
            obj(json!({})),
        )
        .validate();
        assert_denied(
            &v,
            403,
            &[(
                "metadata.annotations[vteam.ambient-code/conversion-data]",
                FORBIDDEN,
            )],
            &["V18"],
        );
        // On create as well.
        let v = Case::create(V1Alpha2, obj(json!({"ambient-code.io/runner-sa": "x"}))).validate();
        assert_denied(
            &v,
            403,
            &[("metadata.annotations[ambient-code.io/runner-sa]", FORBIDDEN)],
            &["V18"],
        );
        // The controller may; and unchanged values pass for anyone.
        assert_allowed(
            &Case::update(V1Alpha2, old, new.clone())
                .by(CONTROLLER)
                .validate(),
        );
        assert_allowed(&Case::update(V1Alpha2, new.clone(), new).validate());
    }

    #[test]
    fn v19_user_context_is_fixed_after_creation() {
        let old = obj(json!({}));
        let mut new = old.clone();
        new["spec"]["userContext"] = json!({"userId": "someone-else"});
        let v = Case::update(V1Alpha2, old.clone(), new.clone()).validate();
        assert_denied(&v, 403, &[("spec.userContext", FORBIDDEN)], &["V19"]);
        assert_allowed(&Case::update(V1Alpha2, old, new).by(CONTROLLER).validate());
    }

    #[test]
    fn v20_a_runner_may_write_only_its_own_session() {
        let own = "system:serviceaccount:team-a:ambient-session-s1";
        let o = obj(json!({}));
        let mut new = o.clone();
        new["metadata"]["annotations"] = json!({"ambient-code.io/sdk-session-id": "abc"});
        assert_allowed(
            &Case::update(V1Alpha2, o.clone(), new.clone())
                .by(own)
                .validate(),
        );
        let other_session = Case::update(V1Alpha2, o.clone(), new.clone())
            .by("system:serviceaccount:team-a:ambient-session-s2")
            .validate();
        assert_denied(
            &other_session,
            403,
            &[("metadata.name", FORBIDDEN)],
            &["V20"],
        );
        let other_ns = Case::update(V1Alpha2, o.clone(), new)
            .by(own)
            .named("team-b", "s1")
            .validate();
        assert_denied(&other_ns, 403, &[("metadata.name", FORBIDDEN)], &["V20"]);
        // Other service accounts are not runners.
        assert_allowed(
            &Case::update(V1Alpha2, o.clone(), o)
                .by("system:serviceaccount:team-a:builder")
                .validate(),
        );
    }

    #[test]
    fn v21_desired_phase_is_running_or_stopped() {
        for ok in ["Running", "Stopped"] {
            assert_allowed(
                &Case::create(V1Alpha1, {
                    let mut o = session(V1Alpha1, json!({}));
                    o["metadata"]["annotations"] = json!({"ambient-code.io/desired-phase": ok});
                    o
                })
                .validate(),
            );
        }
        let v = Case::create(
            V1Alpha2,
            obj(json!({"ambient-code.io/desired-phase": "Paused"})),
        )
        .validate();
        assert_denied(
            &v,
            422,
            &[(
                "metadata.annotations[ambient-code.io/desired-phase]",
                "FieldValueNotSupported",
            )],
            &["V21"],
        );
    }
}
