//! The module graph points down only. Every `crate::module` path in `src/`
//! (in `use` lines, grouped `use crate::{a, b}` lines and inline paths) is
//! checked against the layer of the file it is in: a module may use its own
//! layer's module and any layer below, never a layer above and never a peer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. Modules on one line are peers.
const LAYERS: &[&[&str]] = &[
    // Types, field errors, JSON decode helpers, the review envelope; units.
    &["api", "quantity", "duration"],
    &["conversion"],
    &["admission"],
    // What every process shares: metrics registry and probes, file
    // watching, the Kubernetes client setup.
    &["telemetry", "filewatch", "apiclient"],
    &["certs"],
    &["server", "lifecycle"],
    &["cli"],
    // Test and benchmark support (feature `testkit`).
    &["testkit"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a source file belongs to (`src/admission/x.rs` →
/// `admission`); `None` for the crate root files.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Every top-level module a source text names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        // `agentic_webhook::crate` cannot occur; skip `$crate::` in macros.
        if text[..i].ends_with('$') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, self}`: nested groups are inside a module.
            let mut depth = 0usize;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start => {
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            out.insert(name);
                        }
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `(file, module, imported)` for every import that breaks the layering.
fn violations(files: &[(String, String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (file, module, text) in files {
        let Some(from) = layer_of(module) else {
            bad.push(format!("{file}: module `{module}` has no layer in LAYERS"));
            continue;
        };
        for target in imports(text) {
            if target == *module {
                continue;
            }
            match layer_of(&target) {
                None => bad.push(format!("{file}: `crate::{target}` has no layer in LAYERS")),
                Some(to) if to > from => bad.push(format!(
                    "{file}: `{module}` imports `{target}`, a layer above"
                )),
                Some(to) if to == from => {
                    bad.push(format!("{file}: `{module}` imports its peer `{target}`"))
                }
                Some(_) => {}
            }
        }
    }
    bad
}

#[test]
fn no_module_imports_a_module_above_it_or_beside_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    let files: Vec<(String, String, String)> = paths
        .iter()
        .filter_map(|p| {
            let module = module_of(&src, p)?;
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            Some((p.display().to_string(), module, text))
        })
        .collect();
    assert!(files.len() > 50, "read {} files", files.len());
    let bad = violations(&files);
    assert!(
        bad.is_empty(),
        "upward or sideways imports:\n{}",
        bad.join("\n")
    );

    // Every top-level module of the crate has a layer.
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    for line in lib.lines() {
        if let Some(name) = line
            .trim()
            .strip_prefix("pub mod ")
            .and_then(|r| r.strip_suffix(';'))
        {
            assert!(layer_of(name).is_some(), "module `{name}` has no layer");
        }
    }
}

#[test]
fn the_check_catches_upward_sideways_and_grouped_imports() {
    let case =
        |module: &str, text: &str| violations(&[("f.rs".into(), module.into(), text.into())]);
    assert_eq!(
        case("conversion", "use crate::admission::decode::decode_typed;"),
        ["f.rs: `conversion` imports `admission`, a layer above"]
    );
    assert_eq!(
        case("lifecycle", "fn f(m: &crate::server::metrics::Metrics) {}"),
        ["f.rs: `lifecycle` imports its peer `server`"]
    );
    assert_eq!(
        case(
            "api",
            "use crate::{\n    api::field,\n    telemetry::{Raised, Registry},\n};"
        ),
        ["f.rs: `api` imports `telemetry`, a layer above"]
    );
    assert_eq!(
        case("certs", "use crate::nowhere::X;"),
        ["f.rs: `crate::nowhere` has no layer in LAYERS"]
    );
    assert!(case("cli", "use crate::{admission, api, server::http};").is_empty());
    assert!(case("server", "macro_rules! m { () => { $crate::cli::x() } }").is_empty());
}
