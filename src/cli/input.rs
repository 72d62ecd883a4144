//! Reading Kubernetes objects from files: JSON or YAML, one object,
//! several YAML documents, or a `List`.

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

/// One object and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Document {
    /// `FILE: document N[, items[I]]`
    pub origin: String,
    /// The file (`-` for stdin).
    pub file: String,
    /// 1-based document in the file.
    pub document: usize,
    /// Index within a `List`.
    pub item: Option<usize>,
    pub object: Value,
}

pub fn read_text(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Every object in a file; `List` items are expanded.
pub fn read_documents(path: &Path) -> anyhow::Result<Vec<Document>> {
    let text = read_text(path)?;
    let name = path.display().to_string();
    // One JSON document, else YAML (which also reads JSON documents
    // separated by `---`).
    let json = text
        .trim_start()
        .starts_with(['{', '['])
        .then(|| serde_json::from_str::<Value>(&text).ok())
        .flatten();
    let docs: Vec<Value> = match json {
        Some(doc) => vec![doc],
        None => serde_saphyr::from_multiple::<Value>(&text)
            .with_context(|| format!("{name}: neither JSON nor YAML"))?,
    };
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let origin = format!("{name}: document {}", i + 1);
        let is_list = doc
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k == "List" || k.ends_with("List"));
        match (is_list, doc.get("items")) {
            (true, Some(Value::Array(items))) => {
                for (j, item) in items.iter().enumerate() {
                    out.push(Document {
                        origin: format!("{origin}, items[{j}]"),
                        file: name.clone(),
                        document: i + 1,
                        item: Some(j),
                        object: item.clone(),
                    });
                }
            }
            _ => out.push(Document {
                origin,
                file: name.clone(),
                document: i + 1,
                item: None,
                object: doc,
            }),
        }
    }
    Ok(out)
}

/// Objects as YAML documents separated by `---`.
pub fn to_yaml_stream(objects: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(o).context("encoding YAML")?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
