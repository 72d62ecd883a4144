//! docs/rules.md is the catalogue of rule ids that every denial, warning,
//! log line and metric label quotes. Held to the code: each id the code
//! knows (`Rule::as_str`) has a section, each id a validator emits is
//! documented with an example, and the doc names no id the code lacks.

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `### ID title` headings and the text of each section.
fn sections(doc: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            let id = h.split_whitespace().next().unwrap_or_default().to_owned();
            out.push((id, String::new()));
        } else if line.starts_with("## ") || line.starts_with("# ") {
            out.push((String::new(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out.into_iter().filter(|(id, _)| !id.is_empty()).collect()
}

/// The ids `Rule::as_str` maps to: `Rule::V1 => "V1"`.
fn known_ids() -> BTreeSet<String> {
    let src = read("src/api/field.rs");
    src.lines()
        .filter_map(|l| {
            let (lhs, rhs) = l.trim().split_once(" => ")?;
            lhs.strip_prefix("Rule::")?;
            // `as_str`'s arms map to string literals (others, like
            // `family`, to enum values).
            let id = rhs
                .trim_end_matches(',')
                .strip_prefix('"')?
                .strip_suffix('"')?;
            Some(id.to_owned())
        })
        .collect()
}

/// Ids the validators construct errors or warnings with.
fn emitted_ids() -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut stack = vec![root().join("src/admission")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.file_name().is_some_and(|n| n == "field.rs") {
                continue;
            }
            let src = std::fs::read_to_string(&path).expect("readable");
            for part in src.split("Rule::").skip(1) {
                let id: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                if id == "Schema" {
                    ids.insert("schema".to_owned());
                } else if id.starts_with('V') && id[1..].chars().all(|c| c.is_ascii_digit()) {
                    ids.insert(id);
                }
            }
        }
    }
    ids
}

#[test]
fn every_rule_id_the_code_knows_has_a_section_and_no_section_is_stale() {
    let doc = read("docs/rules.md");
    let documented: BTreeSet<String> = sections(&doc)
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !id.starts_with('M'))
        .collect();
    let known = known_ids();
    // Read at all: schema and V1-V23 but for V12, V13, V16 (never deny).
    assert!(known.len() >= 21, "{known:?}");
    let missing: Vec<_> = known.difference(&documented).collect();
    assert!(missing.is_empty(), "docs/rules.md lacks {missing:?}");
    // A documented id without a variant must say it never denies (V12,
    // V13, V16: a warning, and rules that say when the others stand aside).
    let sections = sections(&doc);
    let stale: Vec<_> = documented
        .difference(&known)
        .filter(|id| {
            !sections
                .iter()
                .any(|(s, text)| s == *id && text.contains("Never a denial"))
        })
        .collect();
    assert!(
        stale.is_empty(),
        "docs/rules.md names ids the code does not know: {stale:?}"
    );
}

#[test]
fn every_emitted_rule_is_explained_with_why_and_an_example() {
    let doc = read("docs/rules.md");
    let sections = sections(&doc);
    let emitted = emitted_ids();
    assert!(emitted.len() >= 20, "{emitted:?}");
    for id in &emitted {
        let (_, text) = sections
            .iter()
            .find(|(s, _)| s == id)
            .unwrap_or_else(|| panic!("{id} is emitted by the code but not documented"));
        let never_denies = text.contains("Never a denial");
        assert!(
            text.contains("Example: `") || never_denies,
            "{id}: no example denial"
        );
        assert!(
            text.contains("Why") || never_denies,
            "{id}: does not say why"
        );
        if let Some(example) = text.split("Example: `").nth(1) {
            // Apiserver field-error shape: `path: Reason: detail`.
            let path = example.split(": ").next().unwrap_or_default();
            assert!(
                path.starts_with("spec")
                    || path.starts_with("status")
                    || path.starts_with("metadata"),
                "{id}: example {example:?} does not start with a field path"
            );
        }
    }
}

#[test]
fn every_mutation_is_listed_and_the_readme_links_the_catalogue() {
    let doc = read("docs/rules.md");
    let ids: BTreeSet<String> = sections(&doc).into_iter().map(|(id, _)| id).collect();
    for m in ["M1", "M2", "M3", "M4", "M5"] {
        assert!(ids.contains(m), "docs/rules.md lacks {m}");
    }
    let readme = read("README.md");
    assert!(
        readme.contains("(docs/rules.md)"),
        "README does not link docs/rules.md"
    );
    assert!(
        !readme.contains("](../"),
        "README links outside the repository"
    );
}
