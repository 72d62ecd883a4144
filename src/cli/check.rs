//! One offline admission check: a session (and, for an UPDATE, the stored
//! object) through the webhook's own decoding, mutation and validation, as
//! the apiserver would call them. Shared by `review` and `verify`. Inputs
//! the apiserver would never send (an UPDATE without the stored object, a
//! status write without one, another kind, a bad name, an old object that
//! is not the same object) are refused here rather than judged.

use serde::Serialize;
use serde_json::Value;

use crate::admission::review::{self, RequestBuilder, Verdict};
use crate::admission::{AdmissionService, Policy};
use crate::api::{GROUP, KIND};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
}

/// What is being written, by whom.
#[derive(Clone, Debug)]
pub struct Case {
    pub object: Value,
    pub old: Option<Value>,
    /// `None`: UPDATE with an old object, else CREATE.
    pub operation: Option<Operation>,
    /// Only `status` exists.
    pub subresource: Option<String>,
    pub user: String,
    pub groups: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allowed,
    Denied,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cause {
    pub field: String,
    pub reason: String,
    pub message: String,
    pub rule: String,
}

/// The apiserver's refusal, as a client gets it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Denial {
    /// The webhook that refused.
    pub webhook: String,
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub rules: Vec<String>,
    pub causes: Vec<Cause>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    pub operation: Operation,
    pub decision: Decision,
    pub warnings: Vec<String>,
    /// The mutating webhook's RFC 6902 patch, if it changed anything.
    pub patch: Option<Value>,
    /// The object as it would be stored (after mutation).
    pub object: Value,
    pub denial: Option<Denial>,
}

/// An input the apiserver would never send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    #[error("not an object")]
    NotAnObject,
    #[error("kind {0:?} is not {KIND} (the only kind of {GROUP})")]
    Kind(String),
    #[error("apiVersion {0:?} is not {GROUP}/v1alpha1 or {GROUP}/v1alpha2")]
    ApiVersion(String),
    #[error("metadata.name: Required value")]
    NoName,
    #[error("metadata.name: Invalid value: {0:?}: {1}")]
    BadName(String, &'static str),
    #[error("an UPDATE needs the stored object (--old)")]
    UpdateWithoutOld,
    #[error("a CREATE has no stored object (drop --old, or say --operation UPDATE)")]
    CreateWithOld,
    #[error("a status write is an UPDATE of a stored object (--old)")]
    StatusWithoutOld,
    #[error("the stored object is {old}, not {new}")]
    NotTheSameObject { old: String, new: String },
    #[error("{0}")]
    Review(String),
}

/// The version of one of our objects, `Ok(None)` for another group's.
pub fn our_version(object: &Value) -> Result<Option<&str>, CaseError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(version) = api_version
        .strip_prefix(GROUP)
        .and_then(|v| v.strip_prefix('/'))
    else {
        return Ok(None);
    };
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != KIND {
        return Err(CaseError::Kind(kind.to_owned()));
    }
    match version {
        "v1alpha1" | "v1alpha2" => Ok(Some(version)),
        _ => Err(CaseError::ApiVersion(api_version.to_owned())),
    }
}

/// `namespace/name` (or `name`).
pub fn identity(object: &Value) -> String {
    let meta = &object["metadata"];
    match (meta["namespace"].as_str(), meta["name"].as_str()) {
        (Some(ns), Some(n)) if !ns.is_empty() => format!("{ns}/{n}"),
        (_, Some(n)) => n.to_owned(),
        _ => String::new(),
    }
}

/// A DNS-1123 subdomain, as the apiserver requires of object names.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("must be no more than 253 characters");
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let labels_ok = name.split('.').all(|l| !l.is_empty());
    if !ok_chars || !ends_ok(name.bytes().next()) || !ends_ok(name.bytes().last()) || !labels_ok {
        return Err(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
    }
    Ok(())
}

fn validate_case(case: &Case) -> Result<(Operation, String), CaseError> {
    if !case.object.is_object() {
        return Err(CaseError::NotAnObject);
    }
    let version = our_version(&case.object)?
        .ok_or_else(|| {
            CaseError::ApiVersion(
                case.object["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })?
        .to_owned();
    let name = case.object["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(CaseError::NoName);
    }
    check_name(name).map_err(|why| CaseError::BadName(name.to_owned(), why))?;
    let status = case.subresource.as_deref() == Some("status");
    let op = match (case.operation, &case.old) {
        (Some(Operation::Create), Some(_)) => return Err(CaseError::CreateWithOld),
        (Some(Operation::Update), None) => return Err(CaseError::UpdateWithoutOld),
        (_, None) if status => return Err(CaseError::StatusWithoutOld),
        (Some(op), _) => op,
        (None, Some(_)) => Operation::Update,
        (None, None) => Operation::Create,
    };
    if let Some(old) = &case.old {
        our_version(old)?;
        let (a, b) = (identity(old), identity(&case.object));
        if a != b {
            return Err(CaseError::NotTheSameObject { old: a, new: b });
        }
    }
    Ok((op, version))
}

fn request(case: &Case, op: Operation, version: &str, object: &Value) -> Vec<u8> {
    let op = match op {
        Operation::Create => review::Operation::Create,
        Operation::Update => review::Operation::Update,
    };
    RequestBuilder::new(op, version)
        .uid("offline-review")
        .user(&case.user, &case.groups)
        .object(Some(object.clone()))
        .old_object(case.old.clone())
        .sub_resource(case.subresource.as_deref())
        .dry_run(true)
        .to_vec()
}

/// Judge a raw AdmissionReview body (as `kwctl run --request-path` does):
/// mutation (for the main resource), then validation of the result.
pub fn check_review(policy: &Policy, body: &[u8]) -> Result<Outcome, CaseError> {
    let review = review::decode(body).map_err(|e| CaseError::Review(e.to_string()))?;
    let req = review.request();
    let op = match req.operation.as_str() {
        "CREATE" => Operation::Create,
        "UPDATE" => Operation::Update,
        other => {
            return Err(CaseError::Review(format!(
                "operation {other}: only CREATE and UPDATE are registered"
            )));
        }
    };
    let mut wire: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let case = Case {
        object: wire["request"]["object"].take(),
        old: Some(wire["request"]["oldObject"].take()).filter(|o| !o.is_null()),
        operation: Some(op),
        subresource: wire["request"]["subResource"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        user: wire["request"]["userInfo"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        groups: wire["request"]["userInfo"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
    };
    check(policy, &case)
}

/// Judge one write the way the apiserver's two webhook calls would.
pub fn check(policy: &Policy, case: &Case) -> Result<Outcome, CaseError> {
    let (op, version) = validate_case(case)?;
    let mut object = case.object.clone();
    let mut warnings = Vec::new();
    let mut patch = None;
    // The mutating webhook is registered for the main resource only.
    if case.subresource.is_none() {
        let body = request(case, op, &version, &object);
        let review = review::decode(&body).map_err(|e| CaseError::Review(e.to_string()))?;
        let req = review.request();
        let verdict = policy.mutate(req);
        warnings.extend(verdict.warnings.iter().cloned());
        if let Some(bytes) = &verdict.patch {
            let ops: json_patch::Patch = serde_json::from_slice(bytes)
                .map_err(|e| CaseError::Review(format!("reading our own patch: {e}")))?;
            json_patch::patch(&mut object, &ops)
                .map_err(|e| CaseError::Review(format!("applying our own patch: {e}")))?;
            patch = Some(serde_json::to_value(&ops).unwrap_or(Value::Null));
        }
    }
    let body = request(case, op, &version, &object);
    let review = review::decode(&body).map_err(|e| CaseError::Review(e.to_string()))?;
    let req = review.request();
    let verdict = policy.validate(req);
    warnings.extend(verdict.warnings.iter().cloned());
    let denial = denial(&verdict);
    Ok(Outcome {
        operation: op,
        decision: if denial.is_some() {
            Decision::Denied
        } else {
            Decision::Allowed
        },
        warnings,
        patch,
        object,
        denial,
    })
}

fn denial(v: &Verdict) -> Option<Denial> {
    let deny = v.deny.as_ref()?;
    Some(Denial {
        webhook: super::review_names::VALIDATING.to_owned(),
        code: deny.code,
        reason: deny.reason.to_owned(),
        message: deny.message.clone(),
        rules: v
            .denied_rules
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        causes: deny
            .details
            .causes
            .iter()
            .map(|c| Cause {
                field: c.field.clone(),
                reason: c.reason.to_owned(),
                message: c.message.clone(),
                rule: c.rule.as_str().to_owned(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_1123_subdomains() {
        for ok in ["a", "s1", "my-session.v2", "0abc"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Upper", "-lead", "trail-", "a..b", "under_score", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"a".repeat(254)).is_err());
    }
}
