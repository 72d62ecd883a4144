//! Everything the reconciler would create for one session, as the objects
//! it sends (apiVersion, kind and all): for `agentic-webhook render`, so a
//! template or contract change is reviewed before it reaches a cluster.
//! What needs the reconciler's key (the per-attempt token, the marks) or
//! the apiserver (the service account's token) is shown as a placeholder.
//! Pure.

use serde::Serialize;
use serde_json::{Value, json};

use crate::api::resource::AgenticSession;
use crate::api::v1alpha2::SessionStatus;

use super::world::{
    self, IngressSources, RunnerConfig, runner_role_binding, runner_service_account,
};

/// What a Secret value stands for offline.
pub const NOTICE_TOKEN: &str = "<the attempt's token: HMAC of the session uid and attempt>";
pub const SERVICE_ACCOUNT_TOKEN: &str = "<a fresh token of the session's service account>";

/// Which runner NetworkPolicies the reconciler keeps in a namespace.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    pub egress_denied: Option<Vec<ipnet::IpNet>>,
    pub ingress: Option<IngressSources>,
}

fn typed<T: Serialize>(api_version: &str, kind: &str, o: &T) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        let mut out = serde_json::Map::new();
        out.insert("apiVersion".into(), json!(api_version));
        out.insert("kind".into(), json!(kind));
        out.append(m);
        return Value::Object(out);
    }
    v
}

/// The attempt whose pod the reconciler makes next for a session as
/// stored: a pending session's current one, a running one's retry, a
/// finished one's restart (attempt 1).
pub fn next_attempt(status: Option<&SessionStatus>) -> i64 {
    let attempt = status.and_then(|s| s.attempt).unwrap_or(1).max(1);
    match status.and_then(|s| s.phase.as_ref()) {
        Some(p) if p.is_terminal() => 1,
        Some(p) if p.is_active() => attempt + 1,
        _ => attempt,
    }
}

/// The runner NetworkPolicies of `namespace`.
pub fn policies(namespace: &str, p: &Policies, cfg: &RunnerConfig) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(denied) = &p.egress_denied {
        let np = world::runner_egress_policy(namespace, denied);
        out.push(typed("networking.k8s.io/v1", "NetworkPolicy", &np));
    }
    if let Some(from) = &p.ingress {
        let np = world::runner_ingress_policy(namespace, from, cfg.contract.port);
        out.push(typed("networking.k8s.io/v1", "NetworkPolicy", &np));
    }
    out
}

/// The session's objects, in the order the reconciler makes them: service
/// account, role binding, token Secret, Service, the pod of `attempt`.
pub fn session(session: &AgenticSession, attempt: i64, cfg: &RunnerConfig) -> Vec<Value> {
    let c = &cfg.contract;
    let mut out = Vec::new();
    if let Some(sa) = runner_service_account(session, c) {
        out.push(typed("v1", "ServiceAccount", &sa));
    }
    if let Some(rb) = runner_role_binding(session, c) {
        out.push(typed("rbac.authorization.k8s.io/v1", "RoleBinding", &rb));
    }
    let sa_token = c.service_account.as_ref().map(|_| SERVICE_ACCOUNT_TOKEN);
    let secret = world::runner_token_secret(session, c, NOTICE_TOKEN, sa_token);
    out.push(typed("v1", "Secret", &secret));
    out.push(typed("v1", "Service", &world::runner_service(session, c)));
    out.push(typed(
        "v1",
        "Pod",
        &world::runner_pod(session, attempt, cfg),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status::Phase;

    #[test]
    fn the_next_attempt_is_the_pending_one_a_retry_or_a_restart() {
        let st = |phase: Option<Phase>, attempt: Option<i64>| SessionStatus {
            phase,
            attempt,
            ..SessionStatus::default()
        };
        assert_eq!(next_attempt(None), 1);
        assert_eq!(next_attempt(Some(&st(Some(Phase::Pending), Some(2)))), 2);
        assert_eq!(next_attempt(Some(&st(Some(Phase::Running), Some(2)))), 3);
        assert_eq!(next_attempt(Some(&st(Some(Phase::Creating), None))), 2);
        assert_eq!(next_attempt(Some(&st(Some(Phase::Failed), Some(3)))), 1);
        assert_eq!(next_attempt(Some(&st(Some(Phase::Completed), Some(1)))), 1);
    }
}
