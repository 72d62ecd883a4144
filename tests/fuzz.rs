//! Fuzzing, proptest-style (cargo-fuzz needs a nightly toolchain this
//! project does not assume): the seed corpus in `tests/corpus/` is mutated
//! byte-wise, and arbitrary JSON is grafted into real reviews, then fed to
//! the three decoders and the core exactly as a handler calls them.
//! Properties: nothing panics; every decoded review gets a well-formed answer
//! echoing its uid; a mutation patch applies to the object it was computed
//! for and re-mutating the result asks for nothing more; conversion is stable
//! over a round trip (there → back → there gives the same object).
//!
//! `FUZZ_CASES` sets the cases per property (default 400 here, so CI stays
//! fast; docs/reliability.md gives the soak command).

use std::path::Path;

use agentic_webhook::admission::{AdmissionService, Config, Policy, Principals, review};
use agentic_webhook::conversion::review::Outcome;
use agentic_webhook::conversion::{ConversionService, Converter, review as creview};
use proptest::prelude::*;
use proptest::test_runner::Config as RunnerConfig;
use serde_json::{Value, json};

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    assert!(seeds.len() >= 8, "seed corpus is missing");
    seeds
}

fn config() -> RunnerConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    RunnerConfig {
        cases,
        ..RunnerConfig::default()
    }
}

fn policy() -> Policy {
    Policy::new(Config {
        principals: Principals {
            users: vec!["system:serviceaccount:agentic-system:agentic-reconciler".into()],
            groups: vec!["system:masters".into()],
            ..Principals::default()
        },
        ..Config::default()
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let interesting = prop_oneof![
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"{".to_vec()),
        Just(b"]".to_vec()),
        Just(b",".to_vec()),
        Just(b"null".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just(b"\\u0000".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"-0".to_vec()),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), interesting).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Remove(i, n)),
        (any::<usize>(), 1usize..256).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = b.len().max(1);
        match e {
            Edit::Flip(i, x) => {
                if let Some(c) = b.get_mut(i % len) {
                    *c ^= x | 1;
                }
            }
            Edit::Truncate(i) => b.truncate(i % len),
            Edit::Insert(i, bytes) => {
                let at = (i % len).min(b.len());
                b.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove(i, n) => {
                let at = (i % len).min(b.len());
                let end = (at + n).min(b.len());
                b.drain(at..end);
            }
            Edit::Duplicate(i, n) => {
                let at = (i % len).min(b.len());
                let end = (at + n).min(b.len());
                let span = b[at..end].to_vec();
                b.splice(end..end, span);
            }
        }
    }
    b
}

fn check_admission(p: &Policy, body: &[u8]) {
    let Ok(review) = review::decode(body) else {
        return;
    };
    let req = review.request();
    let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let request_object: Option<Value> = req.object.and_then(|o| serde_json::from_str(o.get()).ok());
    for verdict in [p.mutate(req), p.validate(req)] {
        let out = review.answer(verdict).to_vec();
        let v: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}) for {}",
                String::from_utf8_lossy(body)
            )
        });
        assert_eq!(v["response"]["uid"], req.uid.as_str());
        assert!(v["response"]["allowed"].is_boolean());
        assert_eq!(v["kind"], "AdmissionReview");
        if !sent.is_null() {
            assert_eq!(
                v["apiVersion"], sent["apiVersion"],
                "the answer's apiVersion is the request's"
            );
        }
    }
    let m = p.mutate(req);
    if let (Some(patch), Some(mut obj)) = (m.patch, request_object) {
        let ops: json_patch::Patch = serde_json::from_slice(&patch)
            .unwrap_or_else(|e| panic!("patch is not RFC 6902 ({e})"));
        json_patch::patch(&mut obj, &ops)
            .unwrap_or_else(|e| panic!("patch does not apply to its own object: {e}"));
        // Mutate again, as the apiserver's reinvocation would.
        // (Bodies whose unread parts hold e.g. a lone surrogate escape pass
        // the lazy envelope decode but not a full parse; nothing to re-send.)
        let Ok(mut again) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        again["request"]["object"] = obj;
        let again = serde_json::to_vec(&again).expect("serializes");
        if let Ok(review2) = review::decode(&again) {
            let m2 = p.mutate(review2.request());
            assert!(
                m2.patch.is_none(),
                "mutation is not idempotent: second patch {}",
                String::from_utf8_lossy(m2.patch.as_deref().unwrap_or_default())
            );
        }
    }
}

fn convert_to(objects: &[Value], to: &str) -> Option<Vec<Value>> {
    let bytes = creview::request_body("rt", to, objects);
    let review = creview::decode(&bytes).expect("our own request decodes");
    match Converter.convert(review.request()).0 {
        Outcome::Success(objs) => Some(
            objs.iter()
                .map(|o| {
                    serde_json::from_slice(o)
                        .unwrap_or_else(|e| panic!("converted object is not JSON: {e}"))
                })
                .collect(),
        ),
        Outcome::Failure(msg) => {
            assert!(
                msg.contains("objects["),
                "failure does not name the object: {msg}"
            );
            None
        }
    }
}

fn check_conversion(body: &[u8]) {
    let Ok(review) = creview::decode(body) else {
        return;
    };
    let req = review.request();
    let (outcome, _) = Converter.convert(req);
    let out = review.answer(outcome.clone()).to_vec();
    let v: Value =
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("answer is not JSON: {e}"));
    assert_eq!(v["response"]["uid"], req.uid.as_str());
    assert_eq!(v["kind"], "ConversionReview");
    if let Ok(sent) = serde_json::from_slice::<Value>(body) {
        assert_eq!(
            v["apiVersion"], sent["apiVersion"],
            "the answer's apiVersion is the request's"
        );
    }
    let Outcome::Success(objs) = outcome else {
        return;
    };
    assert_eq!(objs.len(), req.objects.len(), "objects lost or added");
    // Round trip: there, back, there again gives the same objects.
    let to = req.desired_api_version.as_str();
    let back = if to.ends_with("v1alpha1") {
        "vteam.ambient-code/v1alpha2"
    } else {
        "vteam.ambient-code/v1alpha1"
    };
    let there: Vec<Value> = objs
        .iter()
        .map(|o| serde_json::from_slice(o).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    if let Some(returned) = convert_to(&there, back)
        && let Some(again) = convert_to(&returned, to)
    {
        assert_eq!(again, there, "conversion round trip changed the objects");
    }
}

fn json_any() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        Just(json!("https://github.com/acme/api.git")),
        Just(json!("main")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-zA-Z]{1,10}",
                    Just("url".to_owned()),
                    Just("repos".to_owned()),
                    Just("prompt".to_owned()),
                    Just("input".to_owned()),
                    Just("branch".to_owned()),
                    Just("mainRepoIndex".to_owned()),
                    Just("phase".to_owned()),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Where arbitrary JSON is grafted into a review.
const GRAFTS: &[&str] = &[
    "/request/object/spec",
    "/request/object/spec/repos",
    "/request/object/status",
    "/request/object/metadata",
    "/request/oldObject/spec",
    "/request/oldObject/status",
    "/request/object",
    "/request/userInfo",
    "/request/objects/0/spec",
    "/request/objects/0/status",
    "/request/objects/0/metadata/annotations",
    "/request/objects/0",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_bytes_never_panic_and_always_get_well_formed_answers(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let seeds = corpus();
        let body = apply(seeds[seed.index(seeds.len())].clone(), &edits);
        check_admission(&policy(), &body);
        check_conversion(&body);
    }

    #[test]
    fn arbitrary_json_grafted_into_real_reviews(
        seed in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        value in json_any(),
    ) {
        let seeds = corpus();
        let mut review: Value = serde_json::from_slice(&seeds[seed.index(seeds.len())]).expect("JSON");
        let pointer = GRAFTS[at.index(GRAFTS.len())];
        if let Some(slot) = review.pointer_mut(pointer) {
            *slot = value;
            let body = serde_json::to_vec(&review).expect("serializes");
            check_admission(&policy(), &body);
            check_conversion(&body);
        }
    }
}

#[test]
fn every_seed_passes_the_properties_unmutated() {
    let p = policy();
    for body in corpus() {
        let admission = review::decode(&body).is_ok();
        let conversion = creview::decode(&body).is_ok();
        assert!(
            admission || conversion,
            "seed decodes as neither review: {}",
            String::from_utf8_lossy(&body[..80.min(body.len())])
        );
        check_admission(&p, &body);
        check_conversion(&body);
    }
}
