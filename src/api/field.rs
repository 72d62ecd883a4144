//! Field errors modelled on the apiserver's `k8s.io/apimachinery/pkg/util/validation/field`:
//! a typed error kind, a path like `spec.repos[1].url`, the bad value, a detail and
//! the id of the rule that produced it. Rendered once, at the edge, into the deny
//! `Status` kubectl prints as `admission webhook "..." denied the request: <message>`.

use std::fmt::{self, Write as _};

use serde::Serialize;

/// Rule ids (docs/rules.md), plus `Schema` for objects that do not decode.
/// Only rules that can deny have a variant: V12 (deprecated fields) only
/// warns, and V13 and V16 only say when the others stand aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The object does not decode as its version.
    Schema,
    /// Repository URL shape: https, http, ssh or `git@host:path`.
    V1,
    /// No credentials inside URLs.
    V2,
    /// URL hosts: no loopback, link-local, metadata or cluster-internal hosts.
    V3,
    /// Branch names follow `git check-ref-format --branch`.
    V4,
    /// Repo names unique, and at most `--max-repos` repos.
    V5,
    /// `activeWorkflow`: relative path without `..`, URL as V1–V3.
    V6,
    /// Prompt size at most `--max-prompt-bytes`.
    V7,
    /// `llmSettings` ranges.
    V8,
    /// Timeouts positive.
    V9,
    /// Environment variable names: C identifiers, none reserved.
    V10,
    /// `mainRepo` / `mainRepoIndex` point into `repos`.
    V11,
    /// Active sessions: the spec is immutable but for runtime fields.
    V14,
    /// Runtime fields change only on an interactive Running session.
    V15,
    /// Only controller principals write status.
    V17,
    /// Only controller principals touch operator-owned annotations.
    V18,
    /// `spec.userContext` is fixed after creation.
    V19,
    /// A runner service account writes only its own session.
    V20,
    /// `ambient-code.io/desired-phase` is Running or Stopped.
    V21,
    /// Status phase transitions.
    V22,
    /// Status conditions.
    V23,
    /// Session names make valid names for the runner's objects.
    V24,
    /// `spec.userContext` names the user who creates the session.
    V25,
    /// Restarts after RetriesExhausted stay within `--max-restarts`.
    V26,
}

/// What a rule judges, which decides how its errors are answered: shape
/// errors ratchet on UPDATE, principal errors are 403 (Forbidden) rather
/// than 422 (Invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// The object does not decode.
    Schema,
    /// The spec's shape (V1–V11): ratchets.
    Shape,
    /// Changes to a running session (V14–V15).
    Running,
    /// Who may do what (V17–V20, V25, V26): 403, and never warn-only.
    Principal,
    /// Values of user-set metadata: annotations (V21), names (V24).
    Metadata,
    /// The status subresource (V22–V23).
    Status,
}

impl Rule {
    /// Every rule, in id order.
    pub const ALL: [Rule; 24] = [
        Rule::Schema,
        Rule::V1,
        Rule::V2,
        Rule::V3,
        Rule::V4,
        Rule::V5,
        Rule::V6,
        Rule::V7,
        Rule::V8,
        Rule::V9,
        Rule::V10,
        Rule::V11,
        Rule::V14,
        Rule::V15,
        Rule::V17,
        Rule::V18,
        Rule::V19,
        Rule::V20,
        Rule::V21,
        Rule::V22,
        Rule::V23,
        Rule::V24,
        Rule::V25,
        Rule::V26,
    ];

    /// The rule with this id (`V3`, case-insensitive).
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(id.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Schema => "schema",
            Rule::V1 => "V1",
            Rule::V2 => "V2",
            Rule::V3 => "V3",
            Rule::V4 => "V4",
            Rule::V5 => "V5",
            Rule::V6 => "V6",
            Rule::V7 => "V7",
            Rule::V8 => "V8",
            Rule::V9 => "V9",
            Rule::V10 => "V10",
            Rule::V11 => "V11",
            Rule::V14 => "V14",
            Rule::V15 => "V15",
            Rule::V17 => "V17",
            Rule::V18 => "V18",
            Rule::V19 => "V19",
            Rule::V20 => "V20",
            Rule::V21 => "V21",
            Rule::V22 => "V22",
            Rule::V23 => "V23",
            Rule::V24 => "V24",
            Rule::V25 => "V25",
            Rule::V26 => "V26",
        }
    }

    /// The family of each rule. Exhaustive: a new rule must choose one,
    /// and ratcheting and its status code follow from that choice.
    pub fn family(self) -> Family {
        match self {
            Rule::Schema => Family::Schema,
            Rule::V1
            | Rule::V2
            | Rule::V3
            | Rule::V4
            | Rule::V5
            | Rule::V6
            | Rule::V7
            | Rule::V8
            | Rule::V9
            | Rule::V10
            | Rule::V11 => Family::Shape,
            Rule::V14 | Rule::V15 => Family::Running,
            Rule::V17 | Rule::V18 | Rule::V19 | Rule::V20 | Rule::V25 | Rule::V26 => {
                Family::Principal
            }
            Rule::V21 | Rule::V24 => Family::Metadata,
            Rule::V22 | Rule::V23 => Family::Status,
        }
    }

    /// Spec-shape rules, which ratchet on UPDATE.
    pub fn ratchets(self) -> bool {
        self.family() == Family::Shape
    }

    /// Principal rules answer 403 rather than 422.
    pub fn is_authorization(self) -> bool {
        self.family() == Family::Principal
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field path: `spec.repos[1].url`, `spec.environmentVariables[HOME]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_owned())
    }

    pub fn child(&self, name: &str) -> Self {
        let mut s = String::with_capacity(self.0.len() + name.len() + 1);
        s.push_str(&self.0);
        if !s.is_empty() {
            s.push('.');
        }
        s.push_str(name);
        FieldPath(s)
    }

    pub fn index(&self, i: usize) -> Self {
        let mut s = self.0.clone();
        let _ = write!(s, "[{i}]");
        FieldPath(s)
    }

    pub fn key(&self, k: &str) -> Self {
        let mut s = self.0.clone();
        s.push('[');
        s.push_str(k);
        s.push(']');
        FieldPath(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bad value, as the apiserver prints it (`%#v`: strings quoted).
#[derive(Clone, Debug, PartialEq)]
pub enum BadValue {
    Str(String),
    Int(i64),
    Float(String),
    Bool(bool),
}

/// Values longer than this are cut, so a 100 KiB prompt never lands in a message.
const MAX_VALUE_CHARS: usize = 80;

impl BadValue {
    pub fn str(s: &str) -> Self {
        if s.chars().count() > MAX_VALUE_CHARS {
            let mut cut: String = s.chars().take(MAX_VALUE_CHARS - 3).collect();
            cut.push_str("...");
            BadValue::Str(cut)
        } else {
            BadValue::Str(s.to_owned())
        }
    }
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadValue::Str(s) => {
                // JSON string escaping matches Go's %q for everything users type.
                let quoted = serde_json::to_string(s).map_err(|_| fmt::Error)?;
                f.write_str(&quoted)
            }
            BadValue::Int(i) => write!(f, "{i}"),
            BadValue::Float(x) => f.write_str(x),
            BadValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The apiserver's `field.ErrorType`.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorKind {
    Invalid(BadValue),
    Required,
    Forbidden,
    TooLong {
        max: usize,
    },
    TooMany {
        actual: usize,
        max: usize,
    },
    Duplicate(BadValue),
    NotSupported {
        value: BadValue,
        supported: Vec<String>,
    },
}

impl ErrorKind {
    /// `metav1.CauseType` values.
    pub fn cause_reason(&self) -> &'static str {
        match self {
            ErrorKind::Invalid(_) => "FieldValueInvalid",
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong { .. } => "FieldValueTooLong",
            ErrorKind::TooMany { .. } => "FieldValueTooMany",
            ErrorKind::Duplicate(_) => "FieldValueDuplicate",
            ErrorKind::NotSupported { .. } => "FieldValueNotSupported",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub rule: Rule,
    pub field: FieldPath,
    pub kind: ErrorKind,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(
        rule: Rule,
        field: FieldPath,
        value: BadValue,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            rule,
            field,
            kind: ErrorKind::Invalid(value),
            detail: detail.into(),
        }
    }

    pub fn required(rule: Rule, field: FieldPath, detail: impl Into<String>) -> Self {
        Self {
            rule,
            field,
            kind: ErrorKind::Required,
            detail: detail.into(),
        }
    }

    pub fn forbidden(rule: Rule, field: FieldPath, detail: impl Into<String>) -> Self {
        Self {
            rule,
            field,
            kind: ErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    pub fn too_long(rule: Rule, field: FieldPath, max: usize) -> Self {
        Self {
            rule,
            field,
            kind: ErrorKind::TooLong { max },
            detail: String::new(),
        }
    }

    pub fn too_many(rule: Rule, field: FieldPath, actual: usize, max: usize) -> Self {
        Self {
            rule,
            field,
            kind: ErrorKind::TooMany { actual, max },
            detail: String::new(),
        }
    }

    pub fn duplicate(
        rule: Rule,
        field: FieldPath,
        value: BadValue,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            rule,
            field,
            kind: ErrorKind::Duplicate(value),
            detail: detail.into(),
        }
    }

    pub fn not_supported(
        rule: Rule,
        field: FieldPath,
        value: BadValue,
        supported: &[&str],
    ) -> Self {
        Self {
            rule,
            field,
            kind: ErrorKind::NotSupported {
                value,
                supported: supported.iter().map(|s| (*s).to_owned()).collect(),
            },
            detail: String::new(),
        }
    }

    /// The message without the field: `Invalid value: "x": detail` (a cause's `message`).
    pub fn body(&self) -> String {
        let mut s = String::new();
        match &self.kind {
            ErrorKind::Invalid(v) => {
                let _ = write!(s, "Invalid value: {v}");
            }
            ErrorKind::Required => s.push_str("Required value"),
            ErrorKind::Forbidden => s.push_str("Forbidden"),
            ErrorKind::TooLong { max } => {
                let _ = write!(s, "Too long: may not be more than {max} bytes");
            }
            ErrorKind::TooMany { actual, max } => {
                let _ = write!(s, "Too many: {actual}: must have at most {max} items");
            }
            ErrorKind::Duplicate(v) => {
                let _ = write!(s, "Duplicate value: {v}");
            }
            ErrorKind::NotSupported { value, supported } => {
                let _ = write!(s, "Unsupported value: {value}");
                if !supported.is_empty() {
                    s.push_str(": supported values: ");
                    for (i, v) in supported.iter().enumerate() {
                        if i > 0 {
                            s.push_str(", ");
                        }
                        let _ = write!(s, "\"{v}\"");
                    }
                }
            }
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// Key used by ratcheting: the same rule, at the same place, with the same value.
    pub fn ratchet_key(&self) -> (Rule, &str, String) {
        (self.rule, self.field.as_str(), self.body())
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// The apiserver joins several errors into one message; SPEC asks for `[a; b]`.
pub fn join_messages(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => {
            let mut s = String::from("[");
            for (i, e) in many.iter().enumerate() {
                if i > 0 {
                    s.push_str("; ");
                }
                let _ = write!(s, "{e}");
            }
            s.push(']');
            s
        }
    }
}

/// Warnings are printed by kubectl one per line: one line, at most 120 characters.
pub fn warning(text: &str) -> String {
    const MAX: usize = 120;
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= MAX {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(MAX - 3).collect();
        cut.push_str("...");
        cut
    }
}

/// The deny `status` of an AdmissionResponse (`metav1.Status`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DenyStatus {
    pub status: &'static str,
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: DenyDetails,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DenyDetails {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub group: &'static str,
    pub kind: &'static str,
    pub causes: Vec<Cause>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
    /// The rule that produced it (for offline reports; not on the wire).
    #[serde(skip)]
    pub rule: Rule,
}

impl DenyStatus {
    /// 403 when any error is about who is asking, else 422. Authorization wins,
    /// as in the apiserver (authz is decided before validation).
    pub fn from_errors(name: &str, errors: &[FieldError]) -> Self {
        let forbidden: Vec<FieldError> = errors
            .iter()
            .filter(|e| e.rule.is_authorization())
            .cloned()
            .collect();
        let (code, reason, shown) = if forbidden.is_empty() {
            (422, "Invalid", errors)
        } else {
            (403, "Forbidden", forbidden.as_slice())
        };
        DenyStatus {
            status: "Failure",
            code,
            reason,
            message: join_messages(shown),
            details: DenyDetails {
                name: name.to_owned(),
                group: crate::api::GROUP,
                kind: crate::api::KIND,
                causes: shown
                    .iter()
                    .map(|e| Cause {
                        reason: e.kind.cause_reason(),
                        message: e.body(),
                        field: e.field.to_string(),
                        rule: e.rule,
                    })
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_give_the_ratcheting_and_403_sets_of_the_spec() {
        let ids = |f: fn(Rule) -> bool| -> Vec<&'static str> {
            Rule::ALL
                .into_iter()
                .filter(|r| f(*r))
                .map(Rule::as_str)
                .collect()
        };
        assert_eq!(
            ids(Rule::ratchets),
            [
                "V1", "V2", "V3", "V4", "V5", "V6", "V7", "V8", "V9", "V10", "V11"
            ]
        );
        assert_eq!(
            ids(Rule::is_authorization),
            ["V17", "V18", "V19", "V20", "V25", "V26"]
        );
        // ALL lists every rule once, in order, and ids parse back.
        for (i, r) in Rule::ALL.into_iter().enumerate() {
            assert_eq!(Rule::from_id(r.as_str()), Some(r));
            assert!(Rule::ALL[..i].iter().all(|o| *o != r));
        }
        assert_eq!(Rule::from_id("v3"), Some(Rule::V3));
        assert_eq!(Rule::from_id("V99"), None);
        assert_eq!(
            Rule::from_id("V13"),
            None,
            "never denies: no id to warn-only"
        );
    }

    fn url_error() -> FieldError {
        FieldError::invalid(
            Rule::V1,
            FieldPath::new("spec").child("repos").index(1).child("url"),
            BadValue::str("file:///etc"),
            "scheme must be https, http, ssh or git@host:path",
        )
    }

    #[test]
    fn invalid_renders_like_the_apiserver() {
        assert_eq!(
            url_error().to_string(),
            r#"spec.repos[1].url: Invalid value: "file:///etc": scheme must be https, http, ssh or git@host:path"#
        );
    }

    #[test]
    fn every_kind_renders_its_body() {
        let p = FieldPath::new("spec").child("x");
        let cases = [
            (
                FieldError::required(Rule::V1, p.clone(), ""),
                "spec.x: Required value",
            ),
            (
                FieldError::forbidden(Rule::V15, p.clone(), "nope"),
                "spec.x: Forbidden: nope",
            ),
            (
                FieldError::too_long(Rule::V7, p.clone(), 10),
                "spec.x: Too long: may not be more than 10 bytes",
            ),
            (
                FieldError::too_many(Rule::V5, p.clone(), 21, 20),
                "spec.x: Too many: 21: must have at most 20 items",
            ),
            (
                FieldError::duplicate(Rule::V5, p.clone(), BadValue::str("api"), ""),
                r#"spec.x: Duplicate value: "api""#,
            ),
            (
                FieldError::not_supported(
                    Rule::V21,
                    p.clone(),
                    BadValue::str("Go"),
                    &["Running", "Stopped"],
                ),
                r#"spec.x: Unsupported value: "Go": supported values: "Running", "Stopped""#,
            ),
            (
                FieldError::invalid(
                    Rule::V9,
                    p.key("K"),
                    BadValue::Int(-1),
                    "must be greater than 0",
                ),
                "spec.x[K]: Invalid value: -1: must be greater than 0",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn several_errors_join_in_brackets() {
        let a = url_error();
        let b = FieldError::required(Rule::V6, FieldPath::new("spec.activeWorkflow.gitUrl"), "");
        assert_eq!(
            join_messages(&[a.clone(), b.clone()]),
            format!("[{a}; {b}]")
        );
        assert_eq!(join_messages(std::slice::from_ref(&a)), a.to_string());
    }

    #[test]
    fn long_values_are_truncated() {
        let long = "x".repeat(500);
        let BadValue::Str(s) = BadValue::str(&long) else {
            unreachable!()
        };
        assert_eq!(s.chars().count(), MAX_VALUE_CHARS);
        assert!(s.ends_with("..."));
    }

    #[test]
    fn deny_status_is_422_with_causes() {
        let st = DenyStatus::from_errors("s1", &[url_error()]);
        let v = serde_json::to_value(&st).expect("serializes");
        assert_eq!(
            v,
            serde_json::json!({
                "status": "Failure", "code": 422, "reason": "Invalid",
                "message": url_error().to_string(),
                "details": {"name": "s1", "group": "vteam.ambient-code", "kind": "AgenticSession",
                    "causes": [{"reason": "FieldValueInvalid",
                        "message": "Invalid value: \"file:///etc\": scheme must be https, http, ssh or git@host:path",
                        "field": "spec.repos[1].url"}]}
            })
        );
    }

    #[test]
    fn authorization_errors_win_with_403() {
        let forbidden =
            FieldError::forbidden(Rule::V17, FieldPath::new("status"), "controller only");
        let st = DenyStatus::from_errors("s1", &[url_error(), forbidden.clone()]);
        assert_eq!((st.code, st.reason), (403, "Forbidden"));
        assert_eq!(st.message, forbidden.to_string());
        assert_eq!(st.details.causes.len(), 1);
    }

    #[test]
    fn warnings_are_one_short_line() {
        let w = warning(&format!("a\nb{}", "c".repeat(200)));
        assert!(!w.contains('\n'));
        assert_eq!(w.chars().count(), 120);
    }
}
