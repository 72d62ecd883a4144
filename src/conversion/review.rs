//! The `ConversionReview` envelope (`apiextensions.k8s.io/v1` and `v1beta1`).
//!
//! Objects are borrowed raw; converted objects are written back raw, in the
//! same order. The apiserver sends an empty `response` stub with every
//! request; it is ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::api::review::{Review, ReviewRequest, ReviewVersion};

pub use crate::api::review::ReviewError;

pub const KIND: &str = "ConversionReview";

/// A decoded ConversionReview.
pub type ConversionReview<'a> = Review<ConversionRequest<'a>>;

pub fn decode(body: &[u8]) -> Result<ConversionReview<'_>, ReviewError> {
    Review::decode(body)
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

impl ReviewRequest for ConversionRequest<'_> {
    const KIND: &'static str = KIND;
    const API_VERSIONS: [&'static str; 2] =
        ["apiextensions.k8s.io/v1", "apiextensions.k8s.io/v1beta1"];

    fn uid(&self) -> &str {
        &self.uid
    }
}

/// A ConversionReview request as the apiserver sends one (tests, the load
/// generator): `objects` to convert to `desired_api_version`.
pub fn request_body(uid: &str, desired_api_version: &str, objects: &[Value]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RequestOut<'a> {
        uid: &'a str,
        #[serde(rename = "desiredAPIVersion")]
        desired_api_version: &'a str,
        objects: &'a [Value],
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ReviewOut<'a> {
        kind: &'static str,
        api_version: &'static str,
        request: RequestOut<'a>,
    }
    let review = ReviewOut {
        kind: KIND,
        api_version: ReviewVersion::V1.api_version::<ConversionRequest<'_>>(),
        request: RequestOut {
            uid,
            desired_api_version,
            objects,
        },
    };
    // Values and plain structs always serialize.
    serde_json::to_vec(&review).unwrap_or_default()
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

impl Review<ConversionRequest<'_>> {
    /// The answer carrying `outcome`: same apiVersion, same uid.
    pub fn answer(&self, outcome: Outcome) -> ConversionAnswer<'_> {
        ConversionAnswer {
            api_version: self.api_version(),
            uid: self.uid(),
            outcome,
        }
    }
}

/// The ConversionReview answering one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionAnswer<'r> {
    api_version: &'static str,
    uid: &'r str,
    outcome: Outcome,
}

impl ConversionAnswer<'_> {
    /// The response as three pieces, sent one after the other: the envelope
    /// up to the objects, the objects as converted (our own serializer's
    /// output, spliced in without another copy), and the rest.
    pub fn into_parts(self) -> [Vec<u8>; 3] {
        let (objects, message) = match self.outcome {
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
        head.extend_from_slice(self.api_version.as_bytes());
        head.extend_from_slice(b"\",\"kind\":\"ConversionReview\",\"response\":{\"uid\":");
        // Strings and a two-field struct always serialize.
        let _ = serde_json::to_writer(&mut head, self.uid);
        head.extend_from_slice(b",\"convertedObjects\":[");
        let mut tail = b"],\"result\":".to_vec();
        let _ = serde_json::to_writer(&mut tail, &result);
        tail.extend_from_slice(b"}}");
        [head, objects, tail]
    }

    /// The response in one buffer.
    pub fn to_vec(self) -> Vec<u8> {
        self.into_parts().concat()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const MIN: &str = r#"{"kind":"ConversionReview","apiVersion":"apiextensions.k8s.io/v1","request":{"uid":"u\"1","desiredAPIVersion":"vteam.ambient-code/v1alpha2","objects":[{"a":1},{"b":2}]},"response":{"uid":"","convertedObjects":null,"result":{"metadata":{}}}}"#;

    fn json_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("the answer is JSON")
    }

    #[test]
    fn accepts_the_apiservers_response_stub_and_keeps_order() {
        let review = decode(MIN.as_bytes()).expect("decodes");
        assert_eq!(review.api_version(), "apiextensions.k8s.io/v1");
        assert_eq!(
            review
                .request()
                .objects
                .iter()
                .map(|o| o.get())
                .collect::<Vec<_>>(),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
    }

    #[test]
    fn encodes_success_and_failure() {
        let body = MIN.replace(
            "apiextensions.k8s.io/v1\"",
            "apiextensions.k8s.io/v1beta1\"",
        );
        let review = decode(body.as_bytes()).expect("decodes");
        let ok = review
            .answer(Outcome::Success(Converted::from_objects([
                b"{}".to_vec(),
                b"[1]".to_vec(),
            ])))
            .to_vec();
        assert_eq!(
            json_of(&ok),
            json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "ConversionReview",
            "response": {"uid": "u\"1", "convertedObjects": [{}, [1]], "result": {"status": "Success"}}})
        );
        let bad = review
            .answer(Outcome::Failure("ns/x: nope".into()))
            .to_vec();
        assert_eq!(
            json_of(&bad),
            json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "ConversionReview",
            "response": {"uid": "u\"1", "convertedObjects": [],
                         "result": {"status": "Failure", "message": "ns/x: nope"}}})
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
        let review = decode(MIN.as_bytes()).expect("decodes");
        let [head, objects, tail] = review.answer(Outcome::Success(c)).into_parts();
        assert_eq!(objects, b"{\"a\":1},[],{}");
        let whole = json_of(&[head, objects, tail].concat());
        assert_eq!(
            whole["response"]["convertedObjects"],
            json!([{"a": 1}, [], {}])
        );
    }

    #[test]
    fn the_request_builder_makes_what_the_decoder_reads() {
        let body = request_body("u", "vteam.ambient-code/v1alpha1", &[json!({"a": 1})]);
        let review = decode(&body).expect("decodes");
        assert_eq!(review.uid(), "u");
        assert_eq!(
            review.request().desired_api_version,
            "vteam.ambient-code/v1alpha1"
        );
        assert_eq!(
            review
                .request()
                .objects
                .iter()
                .map(|o| o.get())
                .collect::<Vec<_>>(),
            [r#"{"a":1}"#]
        );
    }

    #[test]
    fn malformed_reviews_are_classified() {
        assert!(matches!(decode(b"{"), Err(ReviewError::NotJson(_))));
        assert!(matches!(decode(b"7"), Err(ReviewError::BadShape { .. })));
        assert!(matches!(decode(br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{"uid":"u","objects":{}}}"#), Err(ReviewError::BadShape { .. })));
        assert_eq!(
            decode(br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview"}"#).err(),
            Some(ReviewError::MissingRequest { kind: KIND })
        );
        assert_eq!(decode(br#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview","request":{}}"#).err(), Some(ReviewError::MissingUid { kind: KIND }));
        assert_eq!(
            decode(br#"{"apiVersion":"admission.k8s.io/v1","kind":"ConversionReview"}"#)
                .err()
                .map(|e| e.to_string()),
            Some(r#"apiVersion must be apiextensions.k8s.io/v1 or apiextensions.k8s.io/v1beta1, got "admission.k8s.io/v1""#.to_owned())
        );
    }
}
