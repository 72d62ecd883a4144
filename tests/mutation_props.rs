//! Properties of mutation over arbitrary (messy, legacy, wrongly typed) specs:
//! the patch applies to the raw object, re-mutating yields no patch, nothing
//! the user wrote is deleted, and fields mutation does not own are untouched.

use agentic_webhook::admission::mutate::{PatchOp, mutate_spec};
use agentic_webhook::api::Version;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn messy(core: &'static str) -> BoxedStrategy<String> {
    ("[ \t]{0,2}", "[ \n]{0,2}")
        .prop_map(move |(a, b)| format!("{a}{core}{b}"))
        .boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just("  ".to_owned()),
        "[a-z]{1,8}",
        "\\PC{0,10}",
        messy("feature/x"),
    ]
    .boxed()
}

fn wrong() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!(7)),
        Just(json!(true)),
        Just(json!(null)),
        Just(json!(["a"])),
        Just(json!({"nested": 1})),
    ]
    .boxed()
}

fn string_or_wrong(s: impl Strategy<Value = String> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![8 => s.prop_map(Value::String), 1 => wrong()].boxed()
}

fn url() -> BoxedStrategy<String> {
    prop_oneof![
        messy("https://github.com/acme/api.git"),
        messy("git@github.com:acme/web.git"),
        Just("ssh://git@h/o/r".to_owned()),
        "\\PC{0,12}",
    ]
    .boxed()
}

fn maybe(
    key: &'static str,
    v: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Option<(String, Value)>> {
    proptest::option::of(v.prop_map(move |v| (key.to_owned(), v))).boxed()
}

fn object(fields: Vec<Option<(String, Value)>>) -> Value {
    Value::Object(fields.into_iter().flatten().collect::<Map<_, _>>())
}

fn git_ref() -> BoxedStrategy<Value> {
    (
        maybe("url", string_or_wrong(url())),
        maybe("branch", string_or_wrong(text())),
        maybe("depth", Just(json!(1))),
    )
        .prop_map(|(a, b, c)| object(vec![a, b, c]))
        .boxed()
}

fn repo() -> BoxedStrategy<Value> {
    let flat = (
        maybe("url", string_or_wrong(url())),
        maybe("branch", string_or_wrong(text())),
        maybe("autoPush", Just(json!(true))),
        maybe("output", git_ref()),
        maybe("extra", Just(json!({"keep": "me"}))),
    )
        .prop_map(|(a, b, c, d, e)| object(vec![a, b, c, d, e]));
    let legacy = (
        git_ref(),
        maybe("output", git_ref()),
        maybe("url", string_or_wrong(url())),
        maybe("branch", string_or_wrong(text())),
    )
        .prop_map(|(input, out, url, branch)| {
            let mut o = object(vec![out, url, branch]);
            if let Value::Object(m) = &mut o {
                m.insert("input".into(), input);
            }
            o
        });
    prop_oneof![4 => flat, 4 => legacy, 1 => wrong()].boxed()
}

fn spec() -> BoxedStrategy<Value> {
    (
        maybe("prompt", string_or_wrong(text())),
        maybe("initialPrompt", string_or_wrong(text())),
        maybe(
            "repos",
            prop_oneof![8 => proptest::collection::vec(repo(), 0..4).prop_map(Value::Array), 1 => wrong()],
        ),
        maybe("mainRepo", string_or_wrong(text())),
        maybe(
            "activeWorkflow",
            prop_oneof![
                (
                    maybe("gitUrl", string_or_wrong(url())),
                    maybe("branch", string_or_wrong(text())),
                    maybe("path", string_or_wrong(text())),
                )
                    .prop_map(|(a, b, c)| object(vec![a, b, c])),
                wrong()
            ],
        ),
        maybe("timeout", string_or_wrong(text())),
        maybe("somethingNew", Just(json!({"x": [1, 2]}))),
    )
        .prop_map(|(a, b, c, d, e, f, g)| object(vec![a, b, c, d, e, f, g]))
    .boxed()
}

fn apply(object: &Value, ops: &[PatchOp]) -> Result<Value, String> {
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(ops).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| e.to_string())?;
    Ok(out)
}

fn path_of(op: &PatchOp) -> &str {
    match op {
        PatchOp::Add { path, .. } | PatchOp::Replace { path, .. } | PatchOp::Remove { path } => {
            path
        }
    }
}

const OWNED: &[&str] = &[
    "prompt",
    "initialPrompt",
    "repos",
    "mainRepo",
    "activeWorkflow",
];

/// `PROPTEST_CASES` raises the count for a soak.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]

    #[test]
    fn mutation_is_idempotent_minimal_and_never_deletes(spec in spec(), v2 in any::<bool>()) {
        let version = if v2 { Version::V1Alpha2 } else { Version::V1Alpha1 };
        let object = json!({"apiVersion": version.api_version(), "metadata": {"name": "s"}, "spec": spec});
        let m = mutate_spec(version, object.get("spec"));
        let out = apply(&object, &m.ops).map_err(TestCaseError::fail)?;

        // Idempotent.
        let again = mutate_spec(version, out.get("spec"));
        prop_assert!(again.ops.is_empty(), "second pass: {:?}", again.ops);

        // Only the spec is touched, and each path at most once.
        let mut seen = std::collections::HashSet::new();
        for op in &m.ops {
            prop_assert!(path_of(op).starts_with("/spec/"), "{op:?}");
            prop_assert!(seen.insert(path_of(op).to_owned()), "duplicate op path {op:?}");
        }

        // Removals are moves: the value lives on.
        for op in &m.ops {
            if let PatchOp::Remove { path } = op {
                if path == "/spec/prompt" {
                    prop_assert_eq!(&out["spec"]["initialPrompt"], &object["spec"]["prompt"]);
                } else {
                    let idx: usize = path
                        .strip_prefix("/spec/repos/")
                        .and_then(|r| r.strip_suffix("/input"))
                        .and_then(|i| i.parse().ok())
                        .ok_or_else(|| TestCaseError::fail(format!("unexpected removal {path}")))?;
                    let input = &object["spec"]["repos"][idx]["input"];
                    let keys: Vec<&String> = input.as_object().map(|m| m.keys().collect()).unwrap_or_default();
                    prop_assert!(keys.iter().all(|k| *k == "url" || *k == "branch"), "input had {keys:?}");
                    prop_assert_eq!(
                        out["spec"]["repos"][idx]["url"].as_str(),
                        input["url"].as_str().map(str::trim)
                    );
                }
            }
        }

        // Fields mutation does not own are untouched, at the top and inside repos.
        if let (Some(before), Some(after)) = (object["spec"].as_object(), out["spec"].as_object()) {
            for (k, v) in before {
                if !OWNED.contains(&k.as_str()) {
                    prop_assert_eq!(after.get(k), Some(v), "{}", k);
                }
            }
        }
        if let (Some(before), Some(after)) = (object["spec"]["repos"].as_array(), out["spec"]["repos"].as_array()) {
            prop_assert_eq!(before.len(), after.len());
            for (b, a) in before.iter().zip(after) {
                for key in ["extra", "autoPush"] {
                    prop_assert_eq!(b.get(key), a.get(key));
                }
                if !b.is_object() {
                    prop_assert_eq!(a, b);
                }
            }
        }
        prop_assert_eq!(&out["metadata"], &object["metadata"]);
    }
}
