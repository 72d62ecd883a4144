//! Typed decoding of request objects. On failure the error names the field
//! (`spec.repos[0].url`) and what type it must have, like the apiserver's
//! schema errors, instead of a bare serde message.

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::field::{BadValue, FieldError, FieldPath, Rule};

#[derive(Debug, Clone)]
pub struct DecodeError {
    pub path: Vec<Segment>,
    pub message: String,
    pub value: Option<Value>,
}

/// Decode, paying for path tracking only when the fast path fails.
pub fn decode_typed<T: DeserializeOwned>(json: &str) -> Result<T, DecodeError> {
    // serde's derived structs also accept a JSON array, field by position;
    // an object must be an object.
    if !is_json_object(json) {
        return Err(DecodeError {
            path: Vec::new(),
            message: "invalid type, expected struct Session".into(),
            value: serde_json::from_str(json).ok(),
        });
    }
    if let Ok(v) = serde_json::from_str(json) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path: Vec<Segment> = e.path().iter().cloned().collect();
            let value = serde_json::from_str::<Value>(json)
                .ok()
                .and_then(|root| lookup(&root, &path).cloned());
            Err(DecodeError {
                path,
                message: e.into_inner().to_string(),
                value,
            })
        }
    }
}

/// Whether the first non-whitespace byte opens an object.
pub fn is_json_object(json: &str) -> bool {
    json.trim_start().starts_with('{')
}

fn lookup<'a>(root: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, seg| match seg {
        Segment::Seq { index } => v.get(*index),
        Segment::Map { key } => v.get(key.as_str()),
        _ => None,
    })
}

fn render_path(root: &str, path: &[Segment]) -> FieldPath {
    let mut p = FieldPath::new(root);
    for seg in path {
        p = match seg {
            Segment::Seq { index } => p.index(*index),
            Segment::Map { key } => p.child(key),
            Segment::Enum { variant } => p.child(variant),
            Segment::Unknown => p.child("?"),
        };
    }
    if p.as_str().is_empty() {
        FieldPath::new("<object>")
    } else {
        p
    }
}

/// serde's expectation in the words of a JSON schema.
fn json_type(expected: &str) -> &str {
    let e = expected.trim();
    match e {
        "i64" | "u64" | "i32" | "u32" | "usize" => "integer",
        "a string" | "a borrowed string" => "string",
        "a boolean" => "boolean",
        "a sequence" => "array",
        "a map" => "object",
        "f64" | "a JSON number" => "number",
        _ if e.starts_with("struct ") => "object",
        _ => e,
    }
}

fn bad_value(v: Option<&Value>) -> BadValue {
    match v {
        Some(Value::String(s)) => BadValue::str(s),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => BadValue::Int(i),
            None => BadValue::Float(n.to_string()),
        },
        Some(Value::Bool(b)) => BadValue::Bool(*b),
        Some(Value::Array(_)) => BadValue::str("array"),
        Some(Value::Object(_)) => BadValue::str("object"),
        Some(Value::Null) | None => BadValue::str("null"),
    }
}

impl DecodeError {
    /// A field error rooted at `root` ("" for the object, "oldObject").
    pub fn into_field_error(self, root: &str) -> FieldError {
        let path = render_path(root, &self.path);
        if let Some(field) = self
            .message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            let p = if self.path.is_empty() && root.is_empty() {
                FieldPath::new(field)
            } else {
                path.child(field)
            };
            return FieldError::required(Rule::Schema, p, "");
        }
        let detail = match self.message.split_once(", expected ") {
            Some((_, expected)) => {
                let expected = expected.split(" at line ").next().unwrap_or(expected);
                format!("must be of type {}", json_type(expected))
            }
            None => self
                .message
                .split(" at line ")
                .next()
                .unwrap_or(&self.message)
                .to_owned(),
        };
        FieldError::invalid(Rule::Schema, path, bad_value(self.value.as_ref()), detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SessionV2;

    fn err(json: &str) -> String {
        match decode_typed::<SessionV2>(json) {
            Ok(_) => "decoded".into(),
            Err(e) => e.into_field_error("").to_string(),
        }
    }

    #[test]
    fn wrong_types_name_the_field_and_the_type() {
        assert_eq!(
            err(r#"{"spec":{"repos":[{"url":"https://h/a/b"},{"url":7}]}}"#),
            "spec.repos[1].url: Invalid value: 7: must be of type string"
        );
        assert_eq!(
            err(r#"{"spec":{"timeoutSeconds":"600"}}"#),
            r#"spec.timeoutSeconds: Invalid value: "600": must be of type integer"#
        );
        assert_eq!(
            err(r#"{"spec":{"repos":{"url":"x"}}}"#),
            r#"spec.repos: Invalid value: "object": must be of type array"#
        );
        assert_eq!(
            err(r#"{"spec":{"repos":[{"branch":"main"}]}}"#),
            "spec.repos[0].url: Required value"
        );
        assert_eq!(
            err(r#"{"spec":"nope"}"#),
            r#"spec: Invalid value: "nope": must be of type object"#
        );
        assert_eq!(
            err("[1]"),
            r#"<object>: Invalid value: "array": must be of type object"#
        );
        assert_eq!(err(r#"{"spec":{}}"#), "decoded");
    }
}
