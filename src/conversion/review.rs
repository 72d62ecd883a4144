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

/// Converted objects (raw JSON, request order) in one buffer, joined by
/// commas as they will be sent: a 60 MB review costs one more 60 MB, not a
/// vector of vectors and then a copy of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Converted {
    joined: Vec<u8>,
    ends: Vec<usize>,
}

impl Converted {
    /// Room for about `bytes` of objects.
    pub fn with_capacity(bytes: usize, objects: usize) -> Self {
        Converted {
            joined: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(objects),
        }
    }

    pub fn from_objects<I: IntoIterator<Item = Vec<u8>>>(objects: I) -> Self {
        let mut c = Converted::default();
        for o in objects {
            c.push(&o);
        }
        c
    }

    pub fn push(&mut self, object: &[u8]) {
        if !self.ends.is_empty() {
            self.joined.push(b',');
        }
        self.joined.extend_from_slice(object);
        self.ends.push(self.joined.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each object's JSON.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|e| e + 1));
        starts
            .zip(self.ends.iter())
            .map(|(s, &e)| self.joined.get(s..e).unwrap_or_default())
    }
}

/// The outcome of one review: converted objects or a failure message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Converted),
    Failure(String),
}

#[derive(Serialize)]
struct ResultOut<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// The response as three pieces, sent one after the other: the envelope up
/// to the objects, the objects as converted (our own serializer's output,
/// spliced in without another copy), and the rest.
pub fn encode_parts(version: ReviewVersion, uid: &str, outcome: Outcome) -> [Vec<u8>; 3] {
    let (objects, message) = match outcome {
        Outcome::Success(c) => (c.joined, None),
        Outcome::Failure(msg) => (Vec::new(), Some(msg)),
    };
    let result = ResultOut {
        status: if message.is_some() {
            "Failure"
        } else {
            "Success"
        },
        message: message.as_deref(),
    };
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(b"{\"apiVersion\":\"");
    head.extend_from_slice(version.api_version().as_bytes());
    head.extend_from_slice(b"\",\"kind\":\"ConversionReview\",\"response\":{\"uid\":");
    // Strings and a two-field struct always serialize.
    let _ = serde_json::to_writer(&mut head, uid);
    head.extend_from_slice(b",\"convertedObjects\":[");
    let mut tail = b"],\"result\":".to_vec();
    let _ = serde_json::to_writer(&mut tail, &result);
    tail.extend_from_slice(b"}}");
    [head, objects, tail]
}

/// The response in one buffer.
pub fn encode(version: ReviewVersion, uid: &str, outcome: &Outcome) -> Vec<u8> {
    encode_parts(version, uid, outcome.clone()).concat()
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
            &Outcome::Success(Converted::from_objects([b"{}".to_vec(), b"[1]".to_vec()])),
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
    fn converted_objects_are_one_buffer_read_back_one_by_one() {
        let c = Converted::from_objects([b"{\"a\":1}".to_vec(), b"[]".to_vec(), b"{}".to_vec()]);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            [b"{\"a\":1}".as_slice(), b"[]", b"{}"]
        );
        assert_eq!(Converted::default().iter().count(), 0);
        let [head, objects, tail] =
            encode_parts(ReviewVersion::V1, "u", Outcome::Success(c.clone()));
        assert_eq!(objects, b"{\"a\":1},[],{}");
        let whole: serde_json::Value =
            serde_json::from_slice(&[head, objects, tail].concat()).unwrap_or_default();
        assert_eq!(
            whole["response"]["convertedObjects"],
            serde_json::json!([{"a": 1}, [], {}])
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
