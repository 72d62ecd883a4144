//! The `ConversionReview` envelope (`apiextensions.k8s.io/v1` and `v1beta1`).
//!
//! Objects are borrowed raw; converted objects are written back raw, in the
//! same order. The apiserver sends an empty `response` stub with every
//! request; it is ignored.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const KIND: &str = "ConversionReview";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewVersion {
    V1,
    V1Beta1,
}

impl ReviewVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            ReviewVersion::V1 => "apiextensions.k8s.io/v1",
            ReviewVersion::V1Beta1 => "apiextensions.k8s.io/v1beta1",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "apiextensions.k8s.io/v1" => Some(ReviewVersion::V1),
            "apiextensions.k8s.io/v1beta1" => Some(ReviewVersion::V1Beta1),
            _ => None,
        }
    }
}

/// Why a body is not a usable ConversionReview: HTTP 400.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body is not a ConversionReview: {0}")]
    BadShape(String),
    #[error(
        "apiVersion must be apiextensions.k8s.io/v1 or apiextensions.k8s.io/v1beta1, got {0:?}"
    )]
    WrongApiVersion(String),
    #[error("kind must be ConversionReview, got {0:?}")]
    WrongKind(String),
    #[error("ConversionReview has no request")]
    MissingRequest,
    #[error("ConversionReview request has no uid")]
    MissingUid,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversionRequest<'a> {
    #[serde(default)]
    pub uid: String,
    #[serde(rename = "desiredAPIVersion", default)]
    pub desired_api_version: String,
    #[serde(borrow, default)]
    pub objects: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<ConversionRequest<'a>>,
}

fn check_type(body: &[u8]) -> Result<(), ReviewError> {
    use crate::admission::review::{TypeMismatch, type_mismatch};
    match type_mismatch(body, |v| ReviewVersion::parse(v).is_some(), KIND) {
        Some(TypeMismatch::ApiVersion(v)) => Err(ReviewError::WrongApiVersion(v)),
        Some(TypeMismatch::Kind(k)) => Err(ReviewError::WrongKind(k)),
        None => Ok(()),
    }
}

pub fn decode(body: &[u8]) -> Result<(ReviewVersion, ConversionRequest<'_>), ReviewError> {
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

/// The outcome of one review: converted objects (raw JSON, request order)
/// or a failure message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Vec<Vec<u8>>),
    Failure(String),
}

#[derive(Serialize)]
struct ResultOut<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// Write the response. Converted objects are our own serializer's output,
/// so they are spliced in as they are rather than parsed again.
pub fn encode(version: ReviewVersion, uid: &str, outcome: &Outcome) -> Vec<u8> {
    let (objects, result): (&[Vec<u8>], ResultOut<'_>) = match outcome {
        Outcome::Success(objs) => (
            objs,
            ResultOut {
                status: "Success",
                message: None,
            },
        ),
        Outcome::Failure(msg) => (
            &[],
            ResultOut {
                status: "Failure",
                message: Some(msg),
            },
        ),
    };
    let size: usize = objects.iter().map(|o| o.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 192);
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(version.api_version().as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"ConversionReview\",\"response\":{\"uid\":");
    // Strings and a two-field struct always serialize.
    let _ = serde_json::to_writer(&mut out, uid);
    out.extend_from_slice(b",\"convertedObjects\":[");
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(o);
    }
    out.extend_from_slice(b"],\"result\":");
    let _ = serde_json::to_writer(&mut out, &result);
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_apiservers_response_stub_and_keeps_order() {
        let body = br#"{"kind":"ConversionReview","apiVersion":"apiextensions.k8s.io/v1","request":{"uid":"u","desiredAPIVersion":"vteam.ambient-code/v1alpha2","objects":[{"a":1},{"b":2}]},"response":{"uid":"","convertedObjects":null,"result":{"metadata":{}}}}"#;
        let (v, req) = decode(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, ReviewVersion::V1);
        assert_eq!(
            req.objects.iter().map(|o| o.get()).collect::<Vec<_>>(),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
    }

    #[test]
    fn encodes_success_and_failure() {
        let ok = encode(
            ReviewVersion::V1Beta1,
            "u\"1",
            &Outcome::Success(vec![b"{}".to_vec(), b"[1]".to_vec()]),
        );
        let v: serde_json::Value = serde_json::from_slice(&ok).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "ConversionReview",
            "response": {"uid": "u\"1", "convertedObjects": [{}, [1]], "result": {"status": "Success"}}})
        );
        let bad = encode(
            ReviewVersion::V1,
            "u",
            &Outcome::Failure("ns/x: nope".into()),
        );
        let v: serde_json::Value = serde_json::from_slice(&bad).unwrap_or_default();
        assert_eq!(
            v["response"]["result"],
            serde_json::json!({"status": "Failure", "message": "ns/x: nope"})
        );
    }

    #[test]
    fn malformed_reviews_are_classified() {
        assert!(matches!(decode(b"{"), Err(ReviewError::NotJson(_))));
        assert!(matches!(decode(b"7"), Err(ReviewError::BadShape(_))));
        assert!(matches!(decode(br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{"uid":"u","objects":{}}}"#), Err(ReviewError::BadShape(_))));
        assert_eq!(
            decode(br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview"}"#).err(),
            Some(ReviewError::MissingRequest)
        );
        assert_eq!(decode(br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{}}"#).err(), Some(ReviewError::MissingUid));
        assert!(matches!(
            decode(br#"{"apiVersion":"admission.k8s.io/v1","kind":"ConversionReview"}"#),
            Err(ReviewError::WrongApiVersion(_))
        ));
    }
}
