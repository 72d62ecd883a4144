//! Converting one whole object.
//!
//! The object is split into its top-level members as raw JSON, in order.
//! `spec` and `status` are converted as typed data; `metadata` (with its
//! `managedFields`, often most of the bytes) passes through untouched unless
//! the stash annotation has to change; every other member passes through.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::api::annotations::CONVERSION_DATA;
use crate::api::decode::{decode_typed, is_json_object};
use crate::api::{Version, v1alpha1 as v1};

use super::any::AnySpec;
use super::convert::{ConvertError, spec_from_hub, spec_to_hub, status_from_hub, status_to_hub};
use super::stash::Stash;

/// An object's top-level members, in order, as raw JSON.
pub struct RawObject<'a> {
    entries: Vec<(String, &'a RawValue)>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::with_capacity(5);
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(RawObject { entries })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'a> RawObject<'a> {
    pub fn parse(json: &'a str) -> Result<Self, ConvertError> {
        if !is_json_object(json) {
            return Err(ConvertError::NotAnObject);
        }
        serde_json::from_str(json).map_err(|_| ConvertError::NotAnObject)
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// `namespace/name` of an object, for error messages.
pub fn object_ref(json: &str) -> String {
    #[derive(Deserialize, Default)]
    struct M {
        #[serde(default)]
        name: String,
        #[serde(default)]
        namespace: String,
    }
    #[derive(Deserialize, Default)]
    struct O {
        #[serde(default)]
        metadata: M,
    }
    let o: O = serde_json::from_str(json).unwrap_or_default();
    match (o.metadata.namespace.as_str(), o.metadata.name.as_str()) {
        ("", "") => "(unnamed object)".to_owned(),
        ("", name) => name.to_owned(),
        (ns, name) => format!("{ns}/{name}"),
    }
}

fn decode_part<T: serde::de::DeserializeOwned>(
    raw: &RawValue,
    field: &str,
) -> Result<T, ConvertError> {
    decode_typed(raw.get()).map_err(|e| {
        let fe = e.into_field_error(field);
        ConvertError::Decode {
            field: fe.field.to_string(),
            message: fe.body(),
        }
    })
}

fn to_raw<T: Serialize>(v: &T) -> Result<Box<RawValue>, ConvertError> {
    serde_json::value::to_raw_value(v).map_err(|e| ConvertError::Decode {
        field: "(encode)".into(),
        message: e.to_string(),
    })
}

/// Metadata edited only when the stash is involved. Its members stay raw
/// (managedFields alone is often half the object); only `annotations` is
/// parsed, and the members are written back in their order.
struct MetaEdit<'a> {
    entries: Vec<(String, &'a RawValue)>,
    /// `Some` once `annotations` was parsed (or created).
    annotations: Option<Map<String, Value>>,
}

impl<'a> MetaEdit<'a> {
    fn parse(raw: Option<&'a RawValue>) -> Result<Self, ConvertError> {
        let bad = |message: String| ConvertError::Decode {
            field: "metadata".into(),
            message,
        };
        let Some(raw) = raw else {
            return Ok(MetaEdit {
                entries: Vec::new(),
                annotations: None,
            });
        };
        if !is_json_object(raw.get()) {
            return Err(bad("must be an object".into()));
        }
        let obj: RawObject<'a> = serde_json::from_str(raw.get()).map_err(|e| bad(e.to_string()))?;
        let annotations = match obj.get("annotations") {
            // A non-object is replaced if we must write the stash.
            Some(a) => serde_json::from_str::<Map<String, Value>>(a.get()).ok(),
            None => None,
        };
        Ok(MetaEdit {
            entries: obj.entries,
            annotations,
        })
    }

    fn stash_annotation(&self) -> Option<&str> {
        self.annotations
            .as_ref()
            .and_then(|a| a.get(CONVERSION_DATA))
            .and_then(Value::as_str)
    }

    fn set_stash(&mut self, stash: &Stash) {
        if stash.is_empty() {
            if let Some(a) = self.annotations.as_mut() {
                a.remove(CONVERSION_DATA);
            }
            return;
        }
        self.annotations.get_or_insert_with(Map::new).insert(
            CONVERSION_DATA.to_owned(),
            Value::String(stash.to_annotation()),
        );
    }

    /// The edited metadata, or `None` when nothing is left of it.
    fn render(&self) -> Result<Option<String>, ConvertError> {
        let mut out = String::from("{");
        let mut first = true;
        let mut push = |out: &mut String, key: &str, value: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&Value::String(key.to_owned()).to_string());
            out.push(':');
            out.push_str(value);
        };
        // The apiserver omits empty maps; so do we, or a round trip would
        // add `annotations: {}`.
        let annotations = match &self.annotations {
            Some(a) if !a.is_empty() => Some(to_raw(a)?),
            _ => None,
        };
        let mut wrote = false;
        for (key, raw) in &self.entries {
            if key == "annotations" {
                wrote = true;
                match (&annotations, &self.annotations) {
                    (Some(a), _) => push(&mut out, key, a.get()),
                    (None, Some(_)) => {}
                    // Not an object and untouched: keep as it was.
                    (None, None) => push(&mut out, key, raw.get()),
                }
            } else {
                push(&mut out, key, raw.get());
            }
        }
        if !wrote && let Some(a) = &annotations {
            push(&mut out, "annotations", a.get());
        }
        out.push('}');
        Ok((out.len() > 2).then_some(out))
    }
}

/// Convert one object to `to`. Objects already in `to` come back unchanged
/// (the apiserver never asks for that; [`normalize_object`] rewrites them).
pub fn convert_object(json: &str, to: Version) -> Result<Vec<u8>, ConvertError> {
    rewrite(json, to, false)
}

/// Rewrite one object into the canonical shape of `to`, even when it is
/// already labelled `to`: legacy fields stored under the v1alpha2 label
/// become v1alpha2 fields (or stash entries). Used by `migrate` and the
/// offline `convert`.
pub fn normalize_object(json: &str, to: Version) -> Result<Vec<u8>, ConvertError> {
    rewrite(json, to, true)
}

fn rewrite(json: &str, to: Version, same_version_too: bool) -> Result<Vec<u8>, ConvertError> {
    let obj = RawObject::parse(json)?;
    let api_version: &str = match obj.get("apiVersion") {
        Some(raw) => serde_json::from_str(raw.get()).unwrap_or(""),
        None => "",
    };
    let from = Version::from_api_version(api_version)
        .ok_or_else(|| ConvertError::UnsupportedVersion(api_version.to_owned()))?;
    if from == to && !same_version_too {
        return Ok(json.as_bytes().to_vec());
    }

    let meta_raw = obj.get("metadata");
    // Cheap pre-check: metadata is parsed only if it may hold a stash.
    let mut meta = match meta_raw {
        Some(raw) if raw.get().contains("conversion-data") => Some(MetaEdit::parse(Some(raw))?),
        _ => None,
    };
    let had_stash = meta.as_ref().and_then(MetaEdit::stash_annotation).is_some();
    let mut stash = match meta.as_ref().and_then(MetaEdit::stash_annotation) {
        Some(text) => Stash::parse(text).map_err(|e| ConvertError::BadStash(e.to_string()))?,
        None => Stash::default(),
    };

    // Any source shape -> hub -> target.
    let spec = match obj.get("spec") {
        Some(raw) => {
            let hub = spec_to_hub(decode_part::<AnySpec>(raw, "spec")?, &mut stash.spec, from)?;
            Some(match to {
                Version::V1Alpha2 => to_raw(&hub)?,
                Version::V1Alpha1 => to_raw(&spec_from_hub(hub, &mut stash.spec))?,
            })
        }
        None => None,
    };
    let status = match obj.get("status") {
        Some(raw) => {
            let hub = status_to_hub(
                decode_part::<v1::SessionStatus>(raw, "status")?,
                &mut stash.status,
                from,
            );
            Some(match to {
                Version::V1Alpha2 => to_raw(&hub)?,
                Version::V1Alpha1 => to_raw(&status_from_hub(hub, &mut stash.status))?,
            })
        }
        None => None,
    };

    // `Some(None)`: metadata edited down to nothing (it arrived without
    // metadata, or with only the stash): leave the member out.
    let new_meta = if had_stash || !stash.is_empty() {
        let mut edit = match meta.take() {
            Some(m) => m,
            None => MetaEdit::parse(meta_raw)?,
        };
        edit.set_stash(&stash);
        Some(edit.render()?)
    } else {
        None
    };

    let mut out = Vec::with_capacity(json.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut push = |out: &mut Vec<u8>, key: &str, value: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        // Keys are the object's own (already valid JSON strings when re-escaped).
        out.extend_from_slice(Value::String(key.to_owned()).to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    };
    let target = Value::String(to.api_version().to_owned()).to_string();
    let mut wrote_meta = false;
    for (key, raw) in &obj.entries {
        match key.as_str() {
            "apiVersion" => push(&mut out, key, &target),
            "metadata" => {
                wrote_meta = true;
                match &new_meta {
                    Some(Some(m)) => push(&mut out, key, m),
                    Some(None) => {}
                    None => push(&mut out, key, raw.get()),
                }
            }
            "spec" => push(
                &mut out,
                key,
                spec.as_deref().map_or(raw.get(), RawValue::get),
            ),
            "status" => push(
                &mut out,
                key,
                status.as_deref().map_or(raw.get(), RawValue::get),
            ),
            _ => push(&mut out, key, raw.get()),
        }
    }
    if obj.get("apiVersion").is_none() {
        push(&mut out, "apiVersion", &target);
    }
    if !wrote_meta && let Some(Some(m)) = &new_meta {
        push(&mut out, "metadata", m);
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(v: &Value, to: Version) -> Value {
        let out = convert_object(&v.to_string(), to).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn legacy_v1alpha1_converts_to_flat_v1alpha2_and_metadata_is_untouched() {
        let v1 = json!({
            "apiVersion": "vteam.ambient-code/v1alpha1", "kind": "AgenticSession",
            "metadata": {"name": "s", "namespace": "n", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"prompt": "do it", "mainRepoIndex": 0, "timeout": 600,
                     "repos": [{"input": {"url": "https://github.com/a/api.git", "branch": "main"},
                                "output": {"url": "https://github.com/me/api.git", "branch": "fix"}}]}
        });
        let v2 = conv(&v1, Version::V1Alpha2);
        assert_eq!(
            v2,
            json!({
                "apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
                "metadata": {"name": "s", "namespace": "n", "managedFields": [{"manager": "kubectl"}]},
                "spec": {"initialPrompt": "do it", "mainRepo": "api", "timeoutSeconds": 600,
                         "repos": [{"url": "https://github.com/a/api.git", "branch": "main",
                                    "output": {"url": "https://github.com/me/api.git", "branch": "fix"}}]}
            })
        );
    }

    #[test]
    fn values_without_counterpart_travel_in_the_stash_and_come_back() {
        let v1 = json!({
            "apiVersion": "vteam.ambient-code/v1alpha1", "kind": "AgenticSession",
            "metadata": {"name": "s"},
            "spec": {"initialPrompt": "new", "prompt": "old", "mainRepoIndex": 5,
                     "botAccount": {"name": "bot"}, "repos": [{"url": "https://h/o/r"}]},
            "status": {"phase": "Error", "message": "boom", "total_cost_usd": 1.5, "usage": {"x": {"y": 1}}}
        });
        let v2 = conv(&v1, Version::V1Alpha2);
        assert_eq!(v2["status"], json!({"phase": "Failed"}));
        assert!(v2["spec"].get("mainRepo").is_none());
        let stash: Value = serde_json::from_str(
            v2["metadata"]["annotations"][CONVERSION_DATA]
                .as_str()
                .unwrap_or("{}"),
        )
        .expect("JSON");
        assert_eq!(
            stash,
            json!({"spec": {"prompt": "old", "mainRepoIndex": 5, "botAccount": {"name": "bot"}},
                   "status": {"phase": "Error", "message": "boom", "total_cost_usd": 1.5, "usage": {"x": {"y": 1}}}})
        );
        assert_eq!(conv(&v2, Version::V1Alpha1), v1);
    }

    #[test]
    fn main_repo_naming_no_repo_is_stashed_on_the_way_down() {
        let v2 = json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
            "metadata": {"name": "s", "annotations": {"a": "b"}},
            "spec": {"mainRepo": "ghost", "repos": [{"url": "https://h/o/r"}]}});
        let v1 = conv(&v2, Version::V1Alpha1);
        assert!(v1["spec"].get("mainRepoIndex").is_none());
        assert_eq!(
            v1["metadata"]["annotations"][CONVERSION_DATA],
            r#"{"spec":{"mainRepo":"ghost"}}"#
        );
        assert_eq!(conv(&v1, Version::V1Alpha2), v2);
    }

    #[test]
    fn same_version_is_returned_byte_for_byte() {
        let text = r#"{"apiVersion":"vteam.ambient-code/v1alpha2","kind":"AgenticSession","spec":{"x":1}}"#;
        assert_eq!(
            convert_object(text, Version::V1Alpha2).ok(),
            Some(text.as_bytes().to_vec())
        );
    }

    #[test]
    fn normalizing_fixes_legacy_shapes_stored_under_the_v1alpha2_label() {
        let stored = json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
            "metadata": {"name": "legacy-1"},
            "spec": {"prompt": "p", "mainRepoIndex": 0, "timeout": 600,
                     "repos": [{"input": {"url": "https://github.com/acme/api.git", "branch": "main"}}]},
            "status": {"phase": "Error", "result": "boom"}});
        let out = normalize_object(&stored.to_string(), Version::V1Alpha2)
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            v["spec"],
            json!({"initialPrompt": "p", "mainRepo": "api", "timeoutSeconds": 600,
            "repos": [{"url": "https://github.com/acme/api.git", "branch": "main"}]})
        );
        assert_eq!(v["status"], json!({"phase": "Failed"}));
        assert_eq!(
            v["metadata"]["annotations"][CONVERSION_DATA],
            r#"{"status":{"phase":"Error","result":"boom"}}"#
        );
        // Canonical objects are a fixed point.
        let again = normalize_object(std::str::from_utf8(&out).unwrap_or(""), Version::V1Alpha2)
            .unwrap_or_default();
        assert_eq!(serde_json::from_slice::<Value>(&again).expect("JSON"), v);
    }

    #[test]
    fn objects_without_metadata_convert() {
        let v1 = json!({"apiVersion": "vteam.ambient-code/v1alpha1", "kind": "AgenticSession",
                        "spec": {"prompt": "p", "bot Account": 1, "botAccount": {"name": "x"}}});
        let v2 = conv(&v1, Version::V1Alpha2);
        assert_eq!(v2["spec"], json!({"initialPrompt": "p"}));
        assert!(v2["metadata"]["annotations"][CONVERSION_DATA].is_string());
    }

    #[test]
    fn failures_are_typed() {
        assert_eq!(
            convert_object(r#"{"apiVersion":"v1","kind":"Pod"}"#, Version::V1Alpha2).err(),
            Some(ConvertError::UnsupportedVersion("v1".into()))
        );
        assert_eq!(
            convert_object("[]", Version::V1Alpha2).err(),
            Some(ConvertError::NotAnObject)
        );
        assert_eq!(
            convert_object(
                r#"{"apiVersion":"vteam.ambient-code/v1alpha1","spec":{"repos":[{"branch":"x"}]}}"#,
                Version::V1Alpha2
            )
            .err(),
            Some(ConvertError::RepoWithoutUrl(0))
        );
        let bad_type = convert_object(
            r#"{"apiVersion":"vteam.ambient-code/v1alpha1","spec":{"timeout":"10"}}"#,
            Version::V1Alpha2,
        );
        assert_eq!(
            bad_type.err().map(|e| e.to_string()),
            Some(r#"spec.timeout: Invalid value: "10": must be of type integer"#.to_owned())
        );
        assert_eq!(
            object_ref(r#"{"metadata":{"name":"a","namespace":"b"}}"#),
            "b/a"
        );
    }
}
