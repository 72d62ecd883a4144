//! The `AdmissionReview` (`admission.k8s.io/v1` and `v1beta1`): the request
//! the rules read, the answer built from the decoded review, and a builder
//! for requests shaped as the apiserver sends them (tests, the load
//! generator and the offline `review` command).
//!
//! Decoding borrows from the request body: `object` and `oldObject` stay raw
//! JSON so mutation can patch exactly what the apiserver sent, and each rule
//! family decodes only the parts it reads.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::mutate::PatchOp;
use crate::api::field::{DenyStatus, FieldError, Rule};
use crate::api::review::{Review, ReviewRequest};
use crate::api::{GROUP, KIND as SESSION_KIND, PLURAL};

pub use crate::api::review::ReviewError;

pub const KIND: &str = "AdmissionReview";

/// A decoded AdmissionReview.
pub type AdmissionReview<'a> = Review<AdmissionRequest<'a>>;

/// Decode a body in one pass, classifying failures for a clear 400.
pub fn decode(body: &[u8]) -> Result<AdmissionReview<'_>, ReviewError> {
    Review::decode(body)
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

impl ReviewRequest for AdmissionRequest<'_> {
    const KIND: &'static str = KIND;
    const API_VERSIONS: [&'static str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

    fn uid(&self) -> &str {
        &self.uid
    }
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

    /// A denial of the object `name` for `errors`. With an authorization
    /// error among them the answer is 403 and reports (and counts) only the
    /// authorization rules.
    pub fn deny(name: &str, errors: &[FieldError], warnings: Vec<String>) -> Self {
        let status = DenyStatus::from_errors(name, errors);
        let authz = errors.iter().any(|e| e.rule.is_authorization());
        let mut rules: Vec<Rule> = errors
            .iter()
            .map(|e| e.rule)
            .filter(|r| !authz || r.is_authorization())
            .collect();
        rules.sort();
        rules.dedup();
        Verdict {
            deny: Some(status),
            patch: None,
            warnings,
            denied_rules: rules,
            warned_rules: Vec::new(),
        }
    }

    pub fn allowed(&self) -> bool {
        self.deny.is_none()
    }
}

impl Review<AdmissionRequest<'_>> {
    /// The answer carrying `verdict`.
    pub fn answer(&self, verdict: Verdict) -> Answer<'_> {
        self.answer_with(Cow::Owned(verdict))
    }

    /// The answer carrying a verdict the caller keeps (for its metrics).
    pub fn answer_ref<'r>(&'r self, verdict: &'r Verdict) -> Answer<'r> {
        self.answer_with(Cow::Borrowed(verdict))
    }

    fn answer_with<'r>(&'r self, verdict: Cow<'r, Verdict>) -> Answer<'r> {
        Answer {
            api_version: self.api_version(),
            uid: self.uid(),
            verdict,
        }
    }

    pub fn allow(&self) -> Answer<'_> {
        self.answer(Verdict::allow())
    }

    pub fn deny(&self, errors: &[FieldError]) -> Answer<'_> {
        self.answer(Verdict::deny(self.request().name(), errors, Vec::new()))
    }

    /// Allowed with `ops` (no patch when there are none).
    pub fn patch(&self, ops: &[PatchOp]) -> Answer<'_> {
        self.answer(Verdict {
            patch: (!ops.is_empty())
                .then(|| serde_json::to_vec(ops).ok())
                .flatten(),
            ..Verdict::allow()
        })
    }
}

/// The AdmissionReview answering one request: same apiVersion, same uid.
#[derive(Clone, Debug)]
pub struct Answer<'r> {
    api_version: &'static str,
    uid: &'r str,
    verdict: Cow<'r, Verdict>,
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

impl Serialize for Answer<'_> {
    /// `patchType` is written only together with a non-empty `patch` (the
    /// apiserver rejects one without the other).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let verdict = self.verdict.as_ref();
        let patch = verdict
            .patch
            .as_ref()
            .filter(|p| verdict.allowed() && !p.is_empty())
            .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
        ReviewOut {
            api_version: self.api_version,
            kind: KIND,
            response: ResponseOut {
                uid: self.uid,
                allowed: verdict.allowed(),
                status: verdict.deny.as_ref(),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: &verdict.warnings,
            },
        }
        .serialize(s)
    }
}

impl Answer<'_> {
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The answer as JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail; fall back to a
        // minimal, still well-formed denial rather than panicking if it did.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            format!(
                r#"{{"apiVersion":"{}","kind":"AdmissionReview","response":{{"uid":{},"allowed":false}}}}"#,
                self.api_version,
                Value::String(self.uid.to_owned())
            )
            .into_bytes()
        })
    }
}

/// An AdmissionReview request for an AgenticSession, shaped as the
/// apiserver sends it, for callers that make their own: tests, the load
/// generator, `review` and `verify`.
#[derive(Clone, Debug)]
pub struct RequestBuilder {
    uid: String,
    version: String,
    operation: Operation,
    sub_resource: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    user: UserInfo,
    user_uid: Option<String>,
    object: Option<Value>,
    old_object: Option<Value>,
    dry_run: bool,
    field_manager: Option<String>,
}

#[derive(Serialize)]
struct GroupVersionResource<'a> {
    group: &'a str,
    version: &'a str,
    resource: &'a str,
}

#[derive(Serialize)]
struct UserOut<'a> {
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    groups: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OptionsOut<'a> {
    kind: &'static str,
    api_version: &'static str,
    field_manager: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestOut<'a> {
    uid: &'a str,
    kind: GroupVersionKind,
    resource: GroupVersionResource<'a>,
    request_kind: GroupVersionKind,
    request_resource: GroupVersionResource<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_sub_resource: Option<&'a str>,
    name: Option<&'a str>,
    namespace: Option<&'a str>,
    operation: Operation,
    user_info: UserOut<'a>,
    object: Option<&'a Value>,
    old_object: Option<&'a Value>,
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<OptionsOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    request: RequestOut<'a>,
}

impl RequestBuilder {
    /// `operation` on an AgenticSession of `version` (`v1alpha2`), by the
    /// authenticated user `alice`.
    pub fn new(operation: Operation, version: &str) -> Self {
        RequestBuilder {
            uid: "test-uid".into(),
            version: version.to_owned(),
            operation,
            sub_resource: None,
            name: None,
            namespace: None,
            user: UserInfo {
                username: "alice".into(),
                groups: vec!["system:authenticated".into()],
            },
            user_uid: None,
            object: None,
            old_object: None,
            dry_run: false,
            field_manager: None,
        }
    }

    pub fn uid(mut self, uid: impl Into<String>) -> Self {
        self.uid = uid.into();
        self
    }

    pub fn object(mut self, object: Option<Value>) -> Self {
        self.object = object;
        self
    }

    pub fn old_object(mut self, old: Option<Value>) -> Self {
        self.old_object = old;
        self
    }

    pub fn sub_resource(mut self, sub: Option<&str>) -> Self {
        self.sub_resource = sub.filter(|s| !s.is_empty()).map(str::to_owned);
        self
    }

    /// By default the object's own (for DELETE, the old object's).
    pub fn named(mut self, namespace: &str, name: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self.name = Some(name.to_owned());
        self
    }

    pub fn user(mut self, username: &str, groups: &[impl AsRef<str>]) -> Self {
        self.user = UserInfo {
            username: username.to_owned(),
            groups: groups.iter().map(|g| g.as_ref().to_owned()).collect(),
        };
        self
    }

    pub fn user_uid(mut self, uid: &str) -> Self {
        self.user_uid = Some(uid.to_owned());
        self
    }

    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Also write `options` (CreateOptions / UpdateOptions / DeleteOptions)
    /// as the apiserver does.
    pub fn field_manager(mut self, manager: &str) -> Self {
        self.field_manager = Some(manager.to_owned());
        self
    }

    fn meta(&self, key: &str) -> Option<&str> {
        self.object
            .as_ref()
            .or(self.old_object.as_ref())
            .and_then(|o| o.get("metadata"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
    }

    /// The AdmissionReview body.
    pub fn to_vec(&self) -> Vec<u8> {
        let gvk = || GroupVersionKind {
            group: GROUP.into(),
            version: self.version.clone(),
            kind: SESSION_KIND.into(),
        };
        let gvr = || GroupVersionResource {
            group: GROUP,
            version: &self.version,
            resource: PLURAL,
        };
        let options_kind = match self.operation {
            Operation::Create => Some("CreateOptions"),
            Operation::Update => Some("UpdateOptions"),
            Operation::Delete => Some("DeleteOptions"),
            Operation::Connect => None,
        };
        let review = RequestReviewOut {
            api_version: "admission.k8s.io/v1",
            kind: KIND,
            request: RequestOut {
                uid: &self.uid,
                kind: gvk(),
                resource: gvr(),
                request_kind: gvk(),
                request_resource: gvr(),
                sub_resource: self.sub_resource.as_deref(),
                request_sub_resource: self.sub_resource.as_deref(),
                name: self.name.as_deref().or_else(|| self.meta("name")),
                namespace: self.namespace.as_deref().or_else(|| self.meta("namespace")),
                operation: self.operation,
                user_info: UserOut {
                    username: &self.user.username,
                    uid: self.user_uid.as_deref(),
                    groups: &self.user.groups,
                },
                object: self.object.as_ref(),
                old_object: self.old_object.as_ref(),
                dry_run: self.dry_run,
                options: self.field_manager.as_deref().zip(options_kind).map(
                    |(field_manager, kind)| OptionsOut {
                        kind,
                        api_version: "meta.k8s.io/v1",
                        field_manager,
                    },
                ),
            },
        };
        // Values and plain structs always serialize.
        serde_json::to_vec(&review).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::field::FieldPath;

    const MIN: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"vteam.ambient-code","version":"v1alpha2","kind":"AgenticSession"},"operation":"CREATE","object":{"spec":{}},"oldObject":null}}"#;

    fn json_of(answer: &Answer<'_>) -> Value {
        serde_json::from_slice(&answer.to_vec()).expect("the answer is JSON")
    }

    #[test]
    fn decodes_minimal_review_and_borrows_the_object() {
        let review = decode(MIN.as_bytes()).expect("decodes");
        let req = review.request();
        assert_eq!(review.api_version(), "admission.k8s.io/v1");
        assert_eq!(req.uid, "u1");
        assert_eq!(req.operation, Operation::Create);
        assert_eq!(req.object.map(RawValue::get), Some(r#"{"spec":{}}"#));
        assert!(req.old_object.is_none(), "explicit null is no oldObject");
    }

    #[test]
    fn classifies_malformed_bodies() {
        let kind = KIND;
        type Check = fn(&ReviewError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("{", |e| matches!(e, ReviewError::NotJson(_))),
            ("not json", |e| matches!(e, ReviewError::NotJson(_))),
            ("[]", |e| matches!(e, ReviewError::BadShape { .. })),
            (r#"{"kind":"AdmissionReview"}"#, |e| {
                matches!(e, ReviewError::WrongApiVersion { .. })
            }),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"ConversionReview"}"#,
                |e| matches!(e, ReviewError::WrongKind { .. }),
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                |e| *e == ReviewError::MissingRequest { kind: KIND },
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#,
                |e| *e == ReviewError::MissingUid { kind: KIND },
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","operation":"EXPLODE"}}"#,
                |e| matches!(e, ReviewError::BadShape { .. }),
            ),
        ];
        for (body, check) in cases {
            match decode(body.as_bytes()) {
                Ok(_) => panic!("{body} decoded"),
                Err(e) => assert!(check(&e), "{body}: {e:?} ({kind})"),
            }
        }
    }

    #[test]
    fn allowed_answer_has_no_status_or_patch_type() {
        let body = MIN.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
        let review = decode(body.as_bytes()).expect("decodes");
        assert_eq!(
            json_of(&review.allow()),
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                "response": {"uid": "u1", "allowed": true}})
        );
    }

    #[test]
    fn patch_is_base64_with_patch_type_and_empty_patch_is_omitted() {
        let review = decode(MIN.as_bytes()).expect("decodes");
        let ops = [PatchOp::Remove {
            path: "/spec/prompt".into(),
        }];
        assert_eq!(
            json_of(&review.patch(&ops)),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": "u1", "allowed": true, "patchType": "JSONPatch",
                             "patch": "W3sib3AiOiJyZW1vdmUiLCJwYXRoIjoiL3NwZWMvcHJvbXB0In1d"}})
        );
        let empty = Verdict {
            patch: Some(Vec::new()),
            ..Verdict::allow()
        };
        for answer in [review.patch(&[]), review.answer(empty)] {
            assert_eq!(
                json_of(&answer),
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": {"uid": "u1", "allowed": true}})
            );
        }
    }

    #[test]
    fn a_denial_carries_the_status_and_never_a_patch() {
        let review = decode(MIN.as_bytes()).expect("decodes");
        let errors = [FieldError::required(
            Rule::V1,
            FieldPath::new("spec").child("initialPrompt"),
            "",
        )];
        let mut verdict = Verdict::deny(review.request().name(), &errors, vec!["careful".into()]);
        verdict.patch = Some(b"[]".to_vec());
        let out = json_of(&review.answer_ref(&verdict));
        assert_eq!(out["response"]["allowed"], json!(false));
        assert_eq!(out["response"]["status"]["code"], json!(422));
        assert_eq!(
            out["response"]["status"]["details"]["causes"][0]["field"],
            json!("spec.initialPrompt")
        );
        assert_eq!(out["response"]["warnings"], json!(["careful"]));
        assert!(out["response"].get("patch").is_none(), "{out}");
        assert_eq!(verdict.denied_rules, [Rule::V1]);
        assert_eq!(
            json_of(&review.deny(&errors))["response"]["status"],
            out["response"]["status"]
        );
    }

    #[test]
    fn the_builder_makes_what_the_decoder_reads() {
        let object = json!({"metadata": {"name": "s9", "namespace": "team-b"}, "spec": {}});
        let body = RequestBuilder::new(Operation::Update, "v1alpha1")
            .uid("u-7")
            .object(Some(object.clone()))
            .old_object(Some(object))
            .sub_resource(Some("status"))
            .user("bob", &["g1", "g2"])
            .dry_run(true)
            .field_manager("kubectl")
            .to_vec();
        let review = decode(&body).expect("decodes");
        let req = review.request();
        assert_eq!(
            (req.uid.as_str(), req.operation, req.name(), req.namespace()),
            ("u-7", Operation::Update, "s9", "team-b")
        );
        assert_eq!(req.kind.version, "v1alpha1");
        assert_eq!(req.sub_resource.as_deref(), Some("status"));
        assert_eq!(req.user_info.username, "bob");
        assert_eq!(req.user_info.groups, ["g1", "g2"]);
        assert_eq!(req.dry_run, Some(true));
        assert!(req.old_object.is_some());
        let wire: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            wire["request"]["options"],
            json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl"})
        );
        assert_eq!(wire["request"]["requestSubResource"], json!("status"));
    }
}
