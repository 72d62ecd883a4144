//! Who may do what, V17–V21. Each principal's rights are explicit and as
//! small as the ambient-code platform's code needs (docs/platform.md
//! names the code path behind each):
//!
//! | principal | status | operator annotations | userContext | sessions |
//! |---|---|---|---|---|
//! | controller (this product's reconciler, `--controller-*`) | all | all | may change | all |
//! | platform operator `<platform-ns>:agentic-operator` | all | the platform's | fixed | all |
//! | platform backend `<platform-ns>:backend-api` | `lastActivityTime` | none | fixed | all |
//! | runner `<ns>:ambient-session-<s>` | none | none | fixed | its own; create in `<ns>`; stop those it created |
//! | on a user's behalf: the trigger `ambient-session-trigger`, access keys `ambient-key-*`, `system:masters` | none | none | fixed | as RBAC allows |
//! | anyone else (people) | none | none | their own at creation (V25) | as RBAC allows |
//!
//! Only a controller principal may restart a session past its restart
//! budget (V26); every principal but the tenants may create a session on
//! someone else's behalf (V25).

use std::collections::BTreeMap;

use crate::admission::Principals;
use crate::admission::review::UserInfo;
use crate::api::annotations::{
    CREATED_BY_RUNNER, DESIRED_PHASE, PLATFORM_OWNED, PRODUCT_OWNED, STOP_REQUESTED_AT,
};
use crate::api::common::UserContext;
use crate::api::field::{BadValue, FieldError, FieldPath, Rule};

const SA_PREFIX: &str = "system:serviceaccount:";
const RUNNER_SA_PREFIX: &str = "ambient-session-";
/// The scheduled-session trigger's service account: named like a runner's,
/// it is not one (`operator/internal/handlers/projectsettings.go`).
const TRIGGER_SA: &str = "ambient-session-trigger";
/// The platform's access keys (`backend/handlers/permissions.go`): the
/// backend resolves them to the user who made the key.
const ACCESS_KEY_PREFIX: &str = "ambient-key-";
const PLATFORM_OPERATOR_SA: &str = "agentic-operator";
const PLATFORM_BACKEND_SA: &str = "backend-api";

pub const DESIRED_PHASES: &[&str] = &["Running", "Stopped"];

/// What a principal is to the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role<'a> {
    Controller,
    PlatformOperator,
    PlatformBackend,
    Runner {
        namespace: &'a str,
        session: &'a str,
    },
    /// Creates sessions for a user it is not: the scheduled-session trigger
    /// (its template carries the schedule owner's context), access keys,
    /// and cluster administrators (`system:masters`).
    OnBehalf,
    /// People, and every other service account.
    Tenant,
}

impl Role<'_> {
    pub fn of<'a>(p: &Principals, user: &'a UserInfo) -> Role<'a> {
        if p.is_controller(user) {
            return Role::Controller;
        }
        // Cluster administrators may act as anyone (impersonation) anyway.
        if user.groups.iter().any(|g| g == "system:masters") {
            return Role::OnBehalf;
        }
        if let Some((ns, sa)) = service_account(&user.username) {
            if p.platform_namespace.as_deref() == Some(ns) {
                match sa {
                    PLATFORM_OPERATOR_SA => return Role::PlatformOperator,
                    PLATFORM_BACKEND_SA => return Role::PlatformBackend,
                    _ => {}
                }
            }
            if sa == TRIGGER_SA || sa.starts_with(ACCESS_KEY_PREFIX) {
                return Role::OnBehalf;
            }
            if let Some(session) = sa.strip_prefix(RUNNER_SA_PREFIX) {
                return Role::Runner {
                    namespace: ns,
                    session,
                };
            }
        }
        Role::Tenant
    }
}

fn service_account(username: &str) -> Option<(&str, &str)> {
    username.strip_prefix(SA_PREFIX)?.split_once(':')
}

/// The `(namespace, session)` a runner service account belongs to.
pub fn runner_scope(username: &str) -> Option<(&str, &str)> {
    let (ns, sa) = service_account(username)?;
    if sa == TRIGGER_SA {
        return None;
    }
    Some((ns, sa.strip_prefix(RUNNER_SA_PREFIX)?))
}

/// V17: status belongs to the controllers and the platform's operator; the
/// platform's backend records activity (`websocket/agui_proxy.go`), nothing
/// else. `activity_only`: the write changes no status field but
/// `lastActivityTime`.
pub fn check_status_writer(
    role: Role<'_>,
    user: &UserInfo,
    activity_only: bool,
) -> Option<FieldError> {
    let detail = match role {
        Role::Controller | Role::PlatformOperator => return None,
        Role::PlatformBackend if activity_only => return None,
        Role::PlatformBackend => format!(
            "the platform's backend ({:?}) may update status.lastActivityTime only",
            user.username
        ),
        _ => format!(
            "only controller principals may update the status subresource (user {:?})",
            user.username
        ),
    };
    Some(FieldError::forbidden(
        Rule::V17,
        FieldPath::new("status"),
        detail,
    ))
}

type Annotations = BTreeMap<String, String>;

fn get<'m>(m: Option<&'m Annotations>, k: &str) -> Option<&'m str> {
    m.and_then(|m| m.get(k)).map(String::as_str)
}

/// V18: the platform operator's annotations are its and the controllers';
/// this product's are the controllers' alone, but for the mark the mutating
/// webhook puts on a session a runner creates.
pub fn check_owned_annotations(
    role: Role<'_>,
    creating: bool,
    old: Option<&Annotations>,
    new: Option<&Annotations>,
) -> Vec<FieldError> {
    let may = |k: &str| match role {
        Role::Controller => true,
        Role::PlatformOperator => PLATFORM_OWNED.contains(&k),
        Role::Runner { session, .. } => {
            creating && k == CREATED_BY_RUNNER && get(new, k) == Some(session)
        }
        Role::PlatformBackend | Role::OnBehalf | Role::Tenant => false,
    };
    PLATFORM_OWNED
        .iter()
        .chain(PRODUCT_OWNED)
        .filter(|k| get(old, k) != get(new, k) && !may(k))
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
    role: Role<'_>,
    old: Option<&UserContext>,
    new: Option<&UserContext>,
) -> Option<FieldError> {
    (old != new && role != Role::Controller).then(|| {
        FieldError::forbidden(
            Rule::V19,
            FieldPath::new("spec.userContext"),
            "may not change after creation",
        )
    })
}

/// A write as V20 sees it.
#[derive(Clone, Copy, Debug)]
pub enum Write<'a> {
    Create,
    /// An UPDATE of the main resource. `stop_only`: it changes nothing but
    /// `desired-phase` (to `Stopped`) and `stop-requested-at`, as the
    /// backend's StopSession does.
    Update {
        old: Option<&'a Annotations>,
        stop_only: bool,
    },
    Status,
}

/// V20: a runner writes its own session, creates sessions in its namespace
/// (the runner's `acp_create_session` tool, through the backend) and stops
/// the ones it created (`acp_stop_session`); nothing else.
pub fn check_runner_scope(
    role: Role<'_>,
    user: &UserInfo,
    namespace: &str,
    name: &str,
    write: Write<'_>,
) -> Option<FieldError> {
    let Role::Runner {
        namespace: ns,
        session,
    } = role
    else {
        return None;
    };
    let allowed = ns == namespace
        && match write {
            Write::Create => true,
            Write::Status => session == name,
            Write::Update { old, stop_only } => {
                session == name || (stop_only && get(old, CREATED_BY_RUNNER) == Some(session))
            }
        };
    (!allowed).then(|| {
        FieldError::forbidden(
            Rule::V20,
            FieldPath::new("metadata.name"),
            format!(
                "runner service account {:?} may write only session {ns}/{session}, create sessions in {ns} and stop the ones it created",
                user.username
            ),
        )
    })
}

/// Does `new` differ from `old` only by a stop request?
pub fn is_stop_request(old: Option<&Annotations>, new: Option<&Annotations>) -> bool {
    let rest = |m: Option<&Annotations>| -> Annotations {
        m.into_iter()
            .flatten()
            .filter(|(k, _)| *k != DESIRED_PHASE && *k != STOP_REQUESTED_AT)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    get(new, DESIRED_PHASE) == Some("Stopped") && rest(old) == rest(new)
}

/// The longest session name whose Service (`session-<name>`) is still a
/// DNS label (63).
pub const MAX_NAME: usize = 55;

/// V24: on CREATE, a name the runner's objects can be made from: its
/// Service `session-<name>` is a DNS-1035 label, its pods, labels and
/// runner URL take it whole. Otherwise the session would stay Pending for
/// ever (and a dot would move a templated runner host elsewhere).
pub fn check_session_name(name: &str) -> Option<FieldError> {
    let bytes = name.as_bytes();
    let label = name.len() <= MAX_NAME
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    (!label).then(|| {
        FieldError::invalid(
            Rule::V24,
            FieldPath::new("metadata.name"),
            BadValue::str(name),
            format!(
                "must be a DNS label of at most {MAX_NAME} characters (a-z, 0-9, \"-\"): the runner's Service is session-<name>"
            ),
        )
    })
}

/// The ambient-code backend's spelling of a user id
/// (`backend/server/server.go`, SanitizeUserID): characters other than
/// `[A-Za-z0-9._-]` become `-`, then leading and trailing `-` go.
pub fn platform_user_id(username: &str) -> String {
    let mapped: String = username
        .chars()
        .take(253)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_owned()
}

/// V25: on CREATE, a person's session acts for that person: the
/// `userContext` names them (as the username, or as the platform's backend
/// spells it) and claims only groups they are in. Controllers, the
/// platform, runners (for their parent's user), the trigger and access keys
/// create on someone's behalf.
pub fn check_creator(
    role: Role<'_>,
    user: &UserInfo,
    context: Option<&UserContext>,
) -> Vec<FieldError> {
    let (Role::Tenant, Some(ctx)) = (role, context) else {
        return Vec::new();
    };
    let root = FieldPath::new("spec.userContext");
    let mut errs = Vec::new();
    let me = &user.username;
    if let Some(id) = ctx.user_id.as_deref()
        && id != me
        && id != platform_user_id(me)
        && id != me.replace(':', "-")
    {
        let platform = platform_user_id(me);
        let also = if platform == *me {
            String::new()
        } else {
            format!(" (or {platform:?}, as the platform writes it)")
        };
        errs.push(FieldError::forbidden(
            Rule::V25,
            root.child("userId"),
            format!(
                "must be the creating user {me:?}{also}: a session acts on its creator's behalf"
            ),
        ));
    }
    for (i, g) in ctx.groups.iter().flatten().enumerate() {
        if !user.groups.contains(g) {
            errs.push(FieldError::forbidden(
                Rule::V25,
                root.child("groups").index(i),
                format!("the creating user is not in group {g:?}"),
            ));
        }
    }
    errs
}

/// V26: a tenant may restart a session whose retries are exhausted `max`
/// times (desired-phase Running, counted in `status.restarts`); after that
/// only a controller principal may.
pub fn check_restart_budget(
    role: Role<'_>,
    old_annotations: Option<&Annotations>,
    new_annotations: Option<&Annotations>,
    exhausted: bool,
    restarts: i64,
    max: i64,
) -> Option<FieldError> {
    let asks = get(new_annotations, DESIRED_PHASE) == Some("Running")
        && get(old_annotations, DESIRED_PHASE) != Some("Running");
    (asks && exhausted && restarts >= max && role != Role::Controller).then(|| {
        FieldError::forbidden(
            Rule::V26,
            FieldPath::new("metadata.annotations").key(DESIRED_PHASE),
            format!(
                "the session was restarted {restarts} times after its retries ran out (limit {max}); only a controller principal may restart it again"
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
    use crate::api::field::Rule;

    const FORBIDDEN: &str = "FieldValueForbidden";

    fn obj(annotations: Value) -> Value {
        let mut o = session(
            V1Alpha2,
            json!({"initialPrompt": "p", "userContext": {"userId": "alice"}}),
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

    const OPERATOR: &str = "system:serviceaccount:ambient-code:agentic-operator";
    const BACKEND: &str = "system:serviceaccount:ambient-code:backend-api";
    const RUNNER: &str = "system:serviceaccount:team-a:ambient-session-s1";
    const MARK: &str = "vteam.ambient-code/created-by-runner";

    fn status_change(old: Value, new: Value) -> Case {
        let base = session(V1Alpha1, json!({"initialPrompt": "p"}));
        Case::update(
            V1Alpha1,
            with_status(base.clone(), old),
            with_status(base, new),
        )
        .status()
    }

    #[test]
    fn v17_the_platform_operator_writes_status_as_its_handlers_do() {
        let v = status_change(
            json!({"phase": "Running"}),
            json!({"phase": "Stopping", "conditions": [{"type": "Ready", "status": "False",
                "reason": "Stopping", "message": "Session is stopping",
                "lastTransitionTime": "2026-12-07T10:00:00Z"}]}),
        )
        .by(OPERATOR)
        .validate();
        assert_allowed(&v);
        // Only from the platform's namespace.
        let v = status_change(json!({"phase": "Running"}), json!({"phase": "Stopping"}))
            .by("system:serviceaccount:elsewhere:agentic-operator")
            .validate();
        assert_denied(&v, 403, &[("status", FORBIDDEN)], &["V17"]);
        // One setting moves it.
        let mut cfg = config();
        cfg.principals.platform_namespace = Some("elsewhere".into());
        let v = status_change(json!({"phase": "Running"}), json!({"phase": "Stopping"}))
            .by("system:serviceaccount:elsewhere:agentic-operator")
            .with_config(cfg)
            .validate();
        assert_allowed(&v);
    }

    #[test]
    fn v17_the_platform_backend_may_record_activity_and_nothing_else() {
        let running = json!({"phase": "Running", "startTime": "2026-12-07T10:00:00Z"});
        let mut active = running.clone();
        active["lastActivityTime"] = json!("2026-12-07T10:05:00Z");
        assert_allowed(
            &status_change(running.clone(), active.clone())
                .by(BACKEND)
                .validate(),
        );
        let mut stopped = active.clone();
        stopped["phase"] = json!("Stopping");
        let v = status_change(running, stopped).by(BACKEND).validate();
        assert_denied(&v, 403, &[("status", FORBIDDEN)], &["V17"]);
        assert_eq!(
            message(&v),
            r#"status: Forbidden: the platform's backend ("system:serviceaccount:ambient-code:backend-api") may update status.lastActivityTime only"#
        );
    }

    #[test]
    fn v18_the_platform_operator_owns_its_annotations_but_not_this_products() {
        let old = obj(json!({}));
        let new = obj(
            json!({"ambient-code.io/runner-token-secret": "ambient-runner-token-s1",
                             "ambient-code.io/runner-sa": "ambient-session-s1"}),
        );
        assert_allowed(
            &Case::update(V1Alpha2, old.clone(), new.clone())
                .by(OPERATOR)
                .validate(),
        );
        let v = Case::update(V1Alpha2, old.clone(), new)
            .by(BACKEND)
            .validate();
        assert_eq!(v.deny.as_ref().map(|d| d.code), Some(403));
        let v = Case::update(V1Alpha2, old, obj(json!({"ambient-code.io/attempt": "2"})))
            .by(OPERATOR)
            .validate();
        assert_denied(
            &v,
            403,
            &[("metadata.annotations[ambient-code.io/attempt]", FORBIDDEN)],
            &["V18"],
        );
    }

    #[test]
    fn v19_not_even_the_platform_operator_changes_the_user_context() {
        let old = obj(json!({}));
        let mut new = old.clone();
        new["spec"]["userContext"] = json!({"userId": "someone-else"});
        let v = Case::update(V1Alpha2, old, new).by(OPERATOR).validate();
        assert_denied(&v, 403, &[("spec.userContext", FORBIDDEN)], &["V19"]);
    }

    #[test]
    fn v20_the_scheduled_session_trigger_is_not_a_runner() {
        // backend/handlers/scheduled_sessions.go: the CronJob's pods run as
        // ambient-session-trigger and create sessions of any name.
        let trigger = "system:serviceaccount:team-a:ambient-session-trigger";
        assert_allowed(
            &Case::create(V1Alpha1, obj(json!({})))
                .by(trigger)
                .named("team-a", "nightly-1765000000")
                .validate(),
        );
        let old = with_status(obj(json!({})), json!({"phase": "Stopped"}));
        let mut new = old.clone();
        new["spec"]["initialPrompt"] = json!("tonight's prompt");
        new["metadata"]["annotations"] = json!({"ambient-code.io/desired-phase": "Running",
            "ambient-code.io/force-execute-prompt": "true"});
        assert_allowed(&Case::update(V1Alpha2, old, new).by(trigger).validate());
    }

    #[test]
    fn v20_a_runner_creates_sessions_in_its_namespace_only() {
        let child = obj(json!({MARK: "s1"}));
        assert_allowed(
            &Case::create(V1Alpha1, child.clone())
                .by(RUNNER)
                .named("team-a", "child-1")
                .validate(),
        );
        let v = Case::create(V1Alpha1, child.clone())
            .by(RUNNER)
            .named("team-b", "child-1")
            .validate();
        assert_denied(&v, 403, &[("metadata.name", FORBIDDEN)], &["V20"]);
        // Nobody claims another runner's children.
        let v = Case::create(V1Alpha1, obj(json!({MARK: "s2"})))
            .by(RUNNER)
            .named("team-a", "child-1")
            .validate();
        assert_denied(
            &v,
            403,
            &[(
                "metadata.annotations[vteam.ambient-code/created-by-runner]",
                FORBIDDEN,
            )],
            &["V18"],
        );
        let v = Case::create(V1Alpha1, child)
            .named("team-a", "child-1")
            .validate();
        assert_eq!(v.denied_rules, [Rule::V18]);
    }

    #[test]
    fn v20_a_runner_stops_the_sessions_it_created_and_nothing_more() {
        let stop = |annotations: Value| {
            let mut a = annotations;
            a["ambient-code.io/desired-phase"] = json!("Stopped");
            a["ambient-code.io/stop-requested-at"] = json!("2026-12-07T10:00:00Z");
            a
        };
        let child = with_status(obj(json!({MARK: "s1"})), json!({"phase": "Running"}));
        let mut stopped = child.clone();
        stopped["metadata"]["annotations"] = stop(json!({MARK: "s1"}));
        let named = |c: Case| c.by(RUNNER).named("team-a", "child-1");
        assert_allowed(&named(Case::update(V1Alpha1, child.clone(), stopped.clone())).validate());
        // Not one it did not create.
        let other = with_status(obj(json!({})), json!({"phase": "Running"}));
        let mut other_stopped = other.clone();
        other_stopped["metadata"]["annotations"] = stop(json!({}));
        let v = named(Case::update(V1Alpha1, other, other_stopped)).validate();
        assert_denied(&v, 403, &[("metadata.name", FORBIDDEN)], &["V20"]);
        // Nor more than a stop.
        let mut also_spec = stopped.clone();
        also_spec["spec"]["displayName"] = json!("mine now");
        let v = named(Case::update(V1Alpha1, child.clone(), also_spec)).validate();
        assert_denied(&v, 403, &[("metadata.name", FORBIDDEN)], &["V20"]);
        let mut restart = child.clone();
        restart["metadata"]["annotations"]["ambient-code.io/desired-phase"] = json!("Running");
        let v = named(Case::update(V1Alpha1, child.clone(), restart)).validate();
        assert_denied(&v, 403, &[("metadata.name", FORBIDDEN)], &["V20"]);
        // Nor its status.
        let v = named(Case::update(V1Alpha1, child.clone(), child).status()).validate();
        assert_eq!(v.denied_rules, [Rule::V17, Rule::V20]);
    }

    #[test]
    fn v24_a_name_the_runners_objects_cannot_take_is_refused_at_creation() {
        let long = "a".repeat(56);
        for bad in ["s1.evil.example.com", "S1", "-s1", "s1-", long.as_str()] {
            let v = Case::create(V1Alpha2, obj(json!({})))
                .named("team-a", bad)
                .validate();
            assert_denied(&v, 422, &[("metadata.name", "FieldValueInvalid")], &["V24"]);
        }
        let v = Case::create(V1Alpha2, obj(json!({})))
            .named("team-a", "a.b")
            .validate();
        assert_eq!(
            message(&v),
            r#"metadata.name: Invalid value: "a.b": must be a DNS label of at most 55 characters (a-z, 0-9, "-"): the runner's Service is session-<name>"#
        );
        for good in [
            "s1",
            "session-9f1c2e7a-4b3d-4c1e-9a77-0123456789ab",
            &"a".repeat(55),
        ] {
            assert_allowed(
                &Case::create(V1Alpha2, obj(json!({})))
                    .named("team-a", good)
                    .validate(),
            );
        }
        // Names are fixed once made: an old one is never judged again.
        let old = obj(json!({}));
        let v = Case::update(V1Alpha2, old.clone(), old)
            .named("team-a", "a.b")
            .validate();
        assert_allowed(&v);
    }

    #[test]
    fn v25_a_person_creates_sessions_that_act_for_them_only() {
        let with = |ctx: Value| {
            let mut o = obj(json!({}));
            o["spec"]["userContext"] = ctx;
            o
        };
        let as_alice = |o: Value| {
            Case::create(V1Alpha1, o)
                .by("alice@example.com")
                .groups(&["system:authenticated", "acme-devs"])
                .validate()
        };
        // The username, or the platform's spelling of it.
        for id in ["alice@example.com", "alice-example.com"] {
            assert_allowed(&as_alice(with(
                json!({"userId": id, "groups": ["acme-devs"]}),
            )));
        }
        let v = as_alice(with(json!({"userId": "bob", "groups": ["admins"]})));
        assert_denied(
            &v,
            403,
            &[
                ("spec.userContext.userId", FORBIDDEN),
                ("spec.userContext.groups[0]", FORBIDDEN),
            ],
            &["V25"],
        );
        // The platform's delegates create for the user they work for.
        for by in [
            "system:serviceaccount:team-a:ambient-session-trigger",
            "system:serviceaccount:team-a:ambient-key-ci-3f2a9b1c",
            "system:serviceaccount:team-a:ambient-session-parent",
            "system:serviceaccount:ambient-code:backend-api",
            CONTROLLER,
        ] {
            let v = Case::create(
                V1Alpha1,
                with(json!({"userId": "bob", "groups": ["admins"]})),
            )
            .by(by)
            .validate();
            assert!(
                !v.denied_rules.contains(&Rule::V25),
                "{by}: {}",
                message(&v)
            );
        }
    }

    #[test]
    fn v26_restarts_after_retries_ran_out_are_budgeted() {
        let exhausted = |restarts: i64| {
            with_status(
                obj(json!({})),
                json!({"phase": "Failed", "restarts": restarts, "conditions": [
                    {"type": "RetriesExhausted", "status": "True", "reason": "OOMKilled",
                     "lastTransitionTime": "2026-12-07T10:00:00Z"}]}),
            )
        };
        let restart = |old: Value| {
            let mut new = old.clone();
            new["metadata"]["annotations"] = json!({"ambient-code.io/desired-phase": "Running"});
            Case::update(V1Alpha2, old, new)
        };
        assert_allowed(&restart(exhausted(2)).validate());
        let v = restart(exhausted(3)).validate();
        assert_denied(
            &v,
            403,
            &[(
                "metadata.annotations[ambient-code.io/desired-phase]",
                FORBIDDEN,
            )],
            &["V26"],
        );
        assert!(message(&v).contains("restarted 3 times"), "{}", message(&v));
        assert_allowed(&restart(exhausted(3)).by(CONTROLLER).validate());
        // A failure that did not exhaust the retries (a timeout) is not counted.
        let timed_out = with_status(obj(json!({})), json!({"phase": "Failed", "restarts": 9}));
        assert_allowed(&restart(timed_out).validate());
        // The budget is a setting.
        let mut cfg = config();
        cfg.limits.max_restarts = 5;
        assert_allowed(&restart(exhausted(4)).with_config(cfg).validate());
    }
}
