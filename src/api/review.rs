//! The review envelope the apiserver wraps every webhook call in:
//! `AdmissionReview` (admission.k8s.io) and `ConversionReview`
//! (apiextensions.k8s.io), each in `v1` and `v1beta1`.
//!
//! One decoder for both: the request borrows from the body, and a failure
//! is classified for a clear HTTP 400 (the wrong review type is named before
//! any detail of the request). The answer is built from the decoded
//! [`Review`], so it always carries the request's uid and apiVersion.

use std::borrow::Cow;

use serde::Deserialize;

/// The `request` of one review type.
pub trait ReviewRequest {
    /// `AdmissionReview`, `ConversionReview`.
    const KIND: &'static str;
    /// The two served apiVersions, `v1` first.
    const API_VERSIONS: [&'static str; 2];
    fn uid(&self) -> &str;
}

/// The envelope version a request came in; the answer uses the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewVersion {
    V1,
    V1Beta1,
}

impl ReviewVersion {
    /// The apiVersion of review type `R` in this version.
    pub fn api_version<R: ReviewRequest>(self) -> &'static str {
        let [v1, v1beta1] = R::API_VERSIONS;
        match self {
            ReviewVersion::V1 => v1,
            ReviewVersion::V1Beta1 => v1beta1,
        }
    }

    fn parse<R: ReviewRequest>(s: &str) -> Option<Self> {
        let [v1, v1beta1] = R::API_VERSIONS;
        if s == v1 {
            Some(ReviewVersion::V1)
        } else if s == v1beta1 {
            Some(ReviewVersion::V1Beta1)
        } else {
            None
        }
    }
}

/// Why a body is not a usable review: answered with HTTP 400.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body is not {} {kind}: {detail}", article(kind))]
    BadShape { kind: &'static str, detail: String },
    #[error("apiVersion must be {} or {}, got {got:?}", served[0], served[1])]
    WrongApiVersion {
        served: [&'static str; 2],
        got: String,
    },
    #[error("kind must be {kind}, got {got:?}")]
    WrongKind { kind: &'static str, got: String },
    #[error("{kind} has no request")]
    MissingRequest { kind: &'static str },
    #[error("{kind} request has no uid")]
    MissingUid { kind: &'static str },
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}

/// A decoded review: its version and its request.
#[derive(Clone, Debug)]
pub struct Review<R> {
    version: ReviewVersion,
    request: R,
}

#[derive(Deserialize)]
#[serde(bound = "R: Deserialize<'de>")]
struct Envelope<'a, R> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default = "none")]
    request: Option<R>,
}

fn none<R>() -> Option<R> {
    None
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
}

impl<R: ReviewRequest> Review<R> {
    /// Decode a body in one pass, classifying failures.
    pub fn decode<'a>(body: &'a [u8]) -> Result<Self, ReviewError>
    where
        R: Deserialize<'a>,
    {
        // Derived structs would also take a JSON array by position.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => ReviewError::BadShape {
                        kind: R::KIND,
                        detail: "expected a JSON object".into(),
                    },
                    Err(e) => ReviewError::NotJson(e.to_string()),
                },
            );
        }
        let env: Envelope<'_, R> = match serde_json::from_slice(body) {
            Ok(env) => env,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                Self::check_type(body)?;
                return Err(ReviewError::BadShape {
                    kind: R::KIND,
                    detail: e.to_string(),
                });
            }
            Err(e) => return Err(ReviewError::NotJson(e.to_string())),
        };
        let version = Self::version_of(env.api_version.as_deref())?;
        Self::kind_is_ours(env.kind.as_deref())?;
        let request = env
            .request
            .ok_or(ReviewError::MissingRequest { kind: R::KIND })?;
        if request.uid().is_empty() {
            return Err(ReviewError::MissingUid { kind: R::KIND });
        }
        Ok(Review { version, request })
    }

    /// The error path: read only `apiVersion` and `kind`, so a wrong type
    /// is named before any detail of the request.
    fn check_type(body: &[u8]) -> Result<(), ReviewError> {
        let Ok(t) = serde_json::from_slice::<TypeOnly<'_>>(body) else {
            return Ok(());
        };
        Self::version_of(t.api_version.as_deref())?;
        Self::kind_is_ours(t.kind.as_deref())
    }

    fn version_of(api_version: Option<&str>) -> Result<ReviewVersion, ReviewError> {
        let got = api_version.unwrap_or("");
        ReviewVersion::parse::<R>(got).ok_or_else(|| ReviewError::WrongApiVersion {
            served: R::API_VERSIONS,
            got: got.to_owned(),
        })
    }

    fn kind_is_ours(kind: Option<&str>) -> Result<(), ReviewError> {
        let got = kind.unwrap_or("");
        if got == R::KIND {
            Ok(())
        } else {
            Err(ReviewError::WrongKind {
                kind: R::KIND,
                got: got.to_owned(),
            })
        }
    }

    pub fn version(&self) -> ReviewVersion {
        self.version
    }

    /// The apiVersion the answer must carry.
    pub fn api_version(&self) -> &'static str {
        self.version.api_version::<R>()
    }

    pub fn request(&self) -> &R {
        &self.request
    }

    pub fn uid(&self) -> &str {
        self.request.uid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Req<'a> {
        #[serde(default)]
        uid: String,
        #[serde(borrow, default)]
        note: Option<&'a serde_json::value::RawValue>,
    }

    impl ReviewRequest for Req<'_> {
        const KIND: &'static str = "AdmissionReview";
        const API_VERSIONS: [&'static str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];
        fn uid(&self) -> &str {
            &self.uid
        }
    }

    fn decode(body: &str) -> Result<Review<Req<'_>>, ReviewError> {
        Review::decode(body.as_bytes())
    }

    #[test]
    fn decodes_and_borrows() {
        let r = decode(r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","note":{"a":[1]}}}"#)
            .expect("decodes");
        assert_eq!(r.version(), ReviewVersion::V1Beta1);
        assert_eq!(r.api_version(), "admission.k8s.io/v1beta1");
        assert_eq!(r.uid(), "u");
        assert_eq!(r.request().note.map(|n| n.get()), Some(r#"{"a":[1]}"#));
    }

    #[test]
    fn every_failure_has_its_own_words() {
        let cases = [
            (
                "{",
                "request body is not valid JSON: EOF while parsing an object at line 1 column 1",
            ),
            (
                "[]",
                "request body is not an AdmissionReview: expected a JSON object",
            ),
            (
                r#"{"kind":"AdmissionReview"}"#,
                r#"apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1, got """#,
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"ConversionReview"}"#,
                r#"kind must be AdmissionReview, got "ConversionReview""#,
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "AdmissionReview has no request",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
                "AdmissionReview request has no uid",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":7}}"#,
                r#"apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1, got "admission.k8s.io/v2""#,
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
                "request body is not an AdmissionReview: invalid type: integer `7`, expected a string at line 1 column 79",
            ),
        ];
        for (body, want) in cases {
            match decode(body) {
                Ok(r) => panic!("{body} decoded: {r:?}"),
                Err(e) => assert_eq!(e.to_string(), want, "{body}"),
            }
        }
    }

    #[test]
    fn the_article_follows_the_kind() {
        let e = ReviewError::BadShape {
            kind: "ConversionReview",
            detail: "x".into(),
        };
        assert_eq!(e.to_string(), "request body is not a ConversionReview: x");
    }
}
