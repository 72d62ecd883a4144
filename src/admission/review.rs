//! The `AdmissionReview` envelope (`admission.k8s.io/v1` and `v1beta1`).
//!
//! Decoding borrows from the request body: `object` and `oldObject` stay raw
//! JSON so mutation can patch exactly what the apiserver sent, and each rule
//! family decodes only the parts it reads. The response is built from the
//! request (uid and apiVersion cannot be forgotten).

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::field::DenyStatus;
use super::field::Rule;

pub const KIND: &str = "AdmissionReview";

/// The AdmissionReview version a request came in; the answer uses the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewVersion {
    V1,
    V1Beta1,
}

impl ReviewVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            ReviewVersion::V1 => "admission.k8s.io/v1",
            ReviewVersion::V1Beta1 => "admission.k8s.io/v1beta1",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "admission.k8s.io/v1" => Some(ReviewVersion::V1),
            "admission.k8s.io/v1beta1" => Some(ReviewVersion::V1Beta1),
            _ => None,
        }
    }
}

/// Why a body is not a usable AdmissionReview: answered with HTTP 400.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body is not an AdmissionReview: {0}")]
    BadShape(String),
    #[error("apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1, got {0:?}")]
    WrongApiVersion(String),
    #[error("kind must be AdmissionReview, got {0:?}")]
    WrongKind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has no uid")]
    MissingUid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One admission request. Fields the rules never read (`resource`,
/// `requestKind`, `options`, `userInfo.extra`, ...) are skipped.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest<'a> {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

impl AdmissionRequest<'_> {
    /// The object's name (may be empty on CREATE with `generateName`).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<AdmissionRequest<'a>>,
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// Which envelope field names the wrong review type.
pub(crate) enum TypeMismatch {
    ApiVersion(String),
    Kind(String),
}

/// The error path of both review decoders: read only `apiVersion` and
/// `kind`, so a wrong type is named before any detail of the request.
pub(crate) fn type_mismatch(
    body: &[u8],
    version_ok: impl Fn(&str) -> bool,
    kind: &str,
) -> Option<TypeMismatch> {
    let t = serde_json::from_slice::<TypeOnly<'_>>(body).ok()?;
    let api_version = t.api_version.as_deref().unwrap_or("");
    if !version_ok(api_version) {
        return Some(TypeMismatch::ApiVersion(api_version.to_owned()));
    }
    let got = t.kind.as_deref().unwrap_or("");
    (got != kind).then(|| TypeMismatch::Kind(got.to_owned()))
}

fn check_type(body: &[u8]) -> Result<(), ReviewError> {
    match type_mismatch(body, |v| ReviewVersion::parse(v).is_some(), KIND) {
        Some(TypeMismatch::ApiVersion(v)) => Err(ReviewError::WrongApiVersion(v)),
        Some(TypeMismatch::Kind(k)) => Err(ReviewError::WrongKind(k)),
        None => Ok(()),
    }
}

/// Decode a body in one pass, classifying failures for a clear 400.
pub fn decode(body: &[u8]) -> Result<(ReviewVersion, AdmissionRequest<'_>), ReviewError> {
    // Derived structs would also take a JSON array by position.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ReviewError::BadShape("expected a JSON object".into()),
                Err(e) => ReviewError::NotJson(e.to_string()),
            },
        );
    }
    let env: Envelope<'_> = match serde_json::from_slice(body) {
        Ok(env) => env,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            // Name the wrong apiVersion/kind before any detail of the request.
            check_type(body)?;
            return Err(ReviewError::BadShape(e.to_string()));
        }
        Err(e) => return Err(ReviewError::NotJson(e.to_string())),
    };
    let api_version = env.api_version.as_deref().unwrap_or("");
    let version = ReviewVersion::parse(api_version)
        .ok_or_else(|| ReviewError::WrongApiVersion(api_version.to_owned()))?;
    let kind = env.kind.as_deref().unwrap_or("");
    if kind != KIND {
        return Err(ReviewError::WrongKind(kind.to_owned()));
    }
    let request = env.request.ok_or(ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::MissingUid);
    }
    Ok((version, request))
}

/// What the admission core decided about one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// `None` means allowed.
    pub deny: Option<DenyStatus>,
    /// RFC 6902 patch as JSON; `None` when nothing changes.
    pub patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
    /// Rules that denied (for logs and `denials_total{rule}`).
    pub denied_rules: Vec<Rule>,
    /// Rules that would have denied but are warn-only
    /// (`denials_total{rule, enforcement="warn"}`).
    pub warned_rules: Vec<Rule>,
}

impl Verdict {
    pub fn allow() -> Self {
        Verdict::default()
    }

    pub fn allowed(&self) -> bool {
        self.deny.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a DenyStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

/// Encode the answer to a request. `patchType` is written only together with
/// a non-empty `patch` (the apiserver rejects one without the other).
pub fn encode(version: ReviewVersion, uid: &str, verdict: &Verdict) -> Vec<u8> {
    let patch = verdict
        .patch
        .as_ref()
        .filter(|p| verdict.allowed() && !p.is_empty())
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let out = ReviewOut {
        api_version: version.api_version(),
        kind: KIND,
        response: ResponseOut {
            uid,
            allowed: verdict.allowed(),
            status: verdict.deny.as_ref(),
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: &verdict.warnings,
        },
    };
    // Serializing these plain structs cannot fail; fall back to a minimal,
    // still well-formed denial rather than panicking if it ever did.
    serde_json::to_vec(&out).unwrap_or_else(|_| {
        format!(
            r#"{{"apiVersion":"{}","kind":"AdmissionReview","response":{{"uid":{},"allowed":false}}}}"#,
            version.api_version(),
            serde_json::Value::String(uid.to_owned())
        )
        .into_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"vteam.ambient-code","version":"v1alpha2","kind":"AgenticSession"},"operation":"CREATE","object":{"spec":{}},"oldObject":null}}"#;

    #[test]
    fn decodes_minimal_review_and_borrows_the_object() {
        let (v, req) = decode(MIN.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, ReviewVersion::V1);
        assert_eq!(req.uid, "u1");
        assert_eq!(req.operation, Operation::Create);
        assert_eq!(req.object.map(RawValue::get), Some(r#"{"spec":{}}"#));
        assert!(req.old_object.is_none(), "explicit null is no oldObject");
    }

    #[test]
    fn classifies_malformed_bodies() {
        type Check = fn(&ReviewError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("{", |e| matches!(e, ReviewError::NotJson(_))),
            ("not json", |e| matches!(e, ReviewError::NotJson(_))),
            ("[]", |e| matches!(e, ReviewError::BadShape(_))),
            (r#"{"kind":"AdmissionReview"}"#, |e| {
                matches!(e, ReviewError::WrongApiVersion(_))
            }),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"ConversionReview"}"#,
                |e| matches!(e, ReviewError::WrongKind(_)),
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                |e| *e == ReviewError::MissingRequest,
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#,
                |e| *e == ReviewError::MissingUid,
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","operation":"EXPLODE"}}"#,
                |e| matches!(e, ReviewError::BadShape(_)),
            ),
        ];
        for (body, check) in cases {
            match decode(body.as_bytes()) {
                Ok(_) => panic!("{body} decoded"),
                Err(e) => assert!(check(&e), "{body}: {e:?}"),
            }
        }
    }

    #[test]
    fn allowed_answer_has_no_status_or_patch_type() {
        let out = encode(ReviewVersion::V1Beta1, "u1", &Verdict::allow());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                "response": {"uid": "u1", "allowed": true}})
        );
    }

    #[test]
    fn patch_is_base64_with_patch_type_and_empty_patch_is_omitted() {
        let mut verdict = Verdict::allow();
        verdict.patch = Some(br#"[{"op":"remove","path":"/spec/prompt"}]"#.to_vec());
        let v: serde_json::Value =
            serde_json::from_slice(&encode(ReviewVersion::V1, "u", &verdict)).unwrap_or_default();
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        assert_eq!(
            v["response"]["patch"],
            "W3sib3AiOiJyZW1vdmUiLCJwYXRoIjoiL3NwZWMvcHJvbXB0In1d"
        );
        verdict.patch = Some(Vec::new());
        let v: serde_json::Value =
            serde_json::from_slice(&encode(ReviewVersion::V1, "u", &verdict)).unwrap_or_default();
        assert!(v["response"].get("patchType").is_none());
        assert!(v["response"].get("patch").is_none());
    }
}
