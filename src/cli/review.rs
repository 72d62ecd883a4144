//! `agentic-webhook review PATH...`: every session in files, directories
//! (recursive), multi-document YAML/JSON, `List`s or stdin, through the
//! webhook's own mutation and validation, for CI pipelines
//! (`kustomize build overlay | agentic-webhook review - -o junit`). Other
//! kinds are skipped and counted; a raw AdmissionReview is judged as sent.
//! Exit 0: all allowed; 1: any denied; 2: usage or input errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;

use crate::admission::Policy;

use super::PolicyArgs;
use super::check::{self, Case, Decision, Operation, Outcome};
use super::input::{Document, read_documents, to_yaml_stream};
use super::review_names::MUTATING;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "UPPERCASE")]
pub enum Op {
    Create,
    Update,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// kubectl's words: results on stdout, warnings and denials on stderr.
    Text,
    /// One record per object.
    Json,
    /// JUnit XML, one test case per object.
    Junit,
    /// The objects as they would be stored (allowed ones), ready to apply.
    Yaml,
}

#[derive(clap::Args, Debug)]
pub struct ReviewArgs {
    /// Files or directories (searched for *.yaml, *.yml, *.json); `-` is stdin.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The stored objects, for UPDATEs: paired with the reviewed objects by
    /// namespace/name. Files or directories; `-` is stdin.
    #[arg(long)]
    old: Vec<PathBuf>,
    /// Default: UPDATE for an object with a stored one, else CREATE.
    #[arg(long, value_enum)]
    operation: Option<Op>,
    /// Review a write to a subresource (only `status` exists).
    #[arg(long, value_parser = ["status"])]
    subresource: Option<String>,
    /// The requesting user.
    #[arg(long, default_value = "review-user")]
    user: String,
    /// The requesting user's groups; repeatable.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// What happened to one object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub file: String,
    /// 1-based document in the file.
    pub document: usize,
    /// Index in a `List`, if the object was one of its items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub name: String,
    pub kind: String,
    /// allowed | denied | skipped | error
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub rules: Vec<String>,
    pub causes: Vec<check::Cause>,
    pub patch: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    #[serde(skip)]
    pub outcome: Option<Outcome>,
}

impl Record {
    fn new(doc: &Document, decision: &str) -> Record {
        Record {
            file: doc.file.clone(),
            document: doc.document,
            item: doc.item,
            name: check::identity(&doc.object),
            kind: doc.object["kind"].as_str().unwrap_or_default().to_owned(),
            decision: decision.to_owned(),
            operation: None,
            warnings: Vec::new(),
            code: None,
            reason: None,
            message: None,
            rules: Vec::new(),
            causes: Vec::new(),
            patch: None,
            object: None,
            outcome: None,
        }
    }

    pub(super) fn judged(doc: &Document, outcome: Outcome) -> Record {
        let mut r = Record::new(
            doc,
            match outcome.decision {
                Decision::Allowed => "allowed",
                Decision::Denied => "denied",
            },
        );
        if let Some(name) = outcome.object["metadata"]["name"].as_str()
            && r.name.is_empty()
        {
            r.name = name.to_owned();
        }
        r.kind = crate::api::KIND.to_owned();
        r.operation = Some(outcome.operation);
        r.warnings = outcome.warnings.clone();
        if let Some(d) = &outcome.denial {
            r.code = Some(d.code);
            r.reason = Some(d.reason.clone());
            r.message = Some(d.message.clone());
            r.rules = d.rules.clone();
            r.causes = d.causes.clone();
        }
        r.patch = outcome.patch.clone();
        r.object = Some(outcome.object.clone());
        r.outcome = Some(outcome);
        r
    }

    pub(super) fn error(doc: &Document, e: &dyn std::fmt::Display) -> Record {
        let mut r = Record::new(doc, "error");
        r.message = Some(e.to_string());
        r
    }

    /// The reviewed object's `apiVersion`.
    fn api_version(&self) -> Option<&str> {
        self.outcome
            .as_ref()
            .and_then(|o| o.object["apiVersion"].as_str())
    }

    /// Where it came from, for messages: `FILE` or `FILE (document 2, item 0)`.
    pub fn origin(&self) -> String {
        // kubectl's name for standard input.
        let file = if self.file == "-" {
            "STDIN"
        } else {
            &self.file
        };
        match (self.document, self.item) {
            (1, None) => file.to_owned(),
            (d, None) => format!("{file} (document {d})"),
            (d, Some(i)) => format!("{file} (document {d}, item {i})"),
        }
    }
}

/// Files under `path`: itself, or a directory's YAML/JSON files, sorted.
fn expand(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.as_os_str() == "-" || !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
        for entry in entries {
            let p = entry
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
                .path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every document under `paths`; stdin may be named once.
fn load(paths: &[PathBuf], stdin_used: &mut bool) -> anyhow::Result<Vec<Document>> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            anyhow::ensure!(!*stdin_used, "stdin (-) can be read only once");
            *stdin_used = true;
        }
        for file in expand(path)? {
            docs.extend(read_documents(&file)?);
        }
    }
    Ok(docs)
}

pub fn run(args: &ReviewArgs) -> anyhow::Result<ExitCode> {
    let mut stdin_used = false;
    let docs = load(&args.paths, &mut stdin_used)?;
    let olds = load(&args.old, &mut stdin_used)?;
    let policy = Policy::new(args.policy.config());
    let records = review_all(&policy, args, &docs, &olds);
    report(args.output, &records)
}

fn review_all(
    policy: &Policy,
    args: &ReviewArgs,
    docs: &[Document],
    olds: &[Document],
) -> Vec<Record> {
    // Stored objects by identity; a lone --old pairs with a lone object.
    let single = docs.len() == 1 && olds.len() == 1;
    let mut records = Vec::new();
    for doc in docs {
        if doc.object["kind"] == "AdmissionReview" {
            let body = serde_json::to_vec(&doc.object).unwrap_or_default();
            records.push(match check::check_review(policy, &body) {
                Ok(outcome) => Record::judged(doc, outcome),
                Err(e) => Record::error(doc, &e),
            });
            continue;
        }
        match check::our_version(&doc.object) {
            Ok(None) => {
                records.push(Record::new(doc, "skipped"));
                continue;
            }
            Err(e) => {
                records.push(Record::error(doc, &e));
                continue;
            }
            Ok(Some(_)) => {}
        }
        let id = check::identity(&doc.object);
        let old = if single {
            olds.first()
        } else {
            olds.iter().find(|o| check::identity(&o.object) == id)
        };
        let case = Case {
            object: doc.object.clone(),
            old: old.map(|o| o.object.clone()),
            operation: args.operation.map(|o| match o {
                Op::Create => Operation::Create,
                Op::Update => Operation::Update,
            }),
            subresource: args.subresource.clone(),
            user: args.user.clone(),
            groups: args.groups.clone(),
        };
        records.push(match check::check(policy, &case) {
            Ok(outcome) => Record::judged(doc, outcome),
            Err(e) => Record::error(doc, &e),
        });
    }
    records
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub objects: usize,
    pub allowed: usize,
    pub denied: usize,
    pub skipped: usize,
    pub errors: usize,
}

impl Summary {
    pub fn of(records: &[Record]) -> Summary {
        let count = |d: &str| records.iter().filter(|r| r.decision == d).count();
        Summary {
            objects: records.len(),
            allowed: count("allowed"),
            denied: count("denied"),
            skipped: count("skipped"),
            errors: count("error"),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "Summary: {} objects: {} allowed, {} denied, {} skipped (other kinds), {} errors",
            self.objects, self.allowed, self.denied, self.skipped, self.errors
        )
    }

    /// 2 for input errors, 1 for denials, else 0.
    pub fn exit(&self) -> ExitCode {
        if self.errors > 0 {
            ExitCode::from(2)
        } else if self.denied > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

pub(super) fn report(format: Format, records: &[Record]) -> anyhow::Result<ExitCode> {
    let summary = Summary::of(records);
    match format {
        Format::Text => {
            for r in records {
                text(r);
            }
            println!("{}", summary.line());
        }
        Format::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"results": records, "summary": summary})
                )?
            );
        }
        Format::Junit => {
            print!("{}", junit(records, &summary));
        }
        Format::Yaml => {
            // Only what would be stored; the rest is said on stderr.
            let objects: Vec<Value> = records
                .iter()
                .filter(|r| r.decision == "allowed")
                .filter_map(|r| r.object.clone())
                .collect();
            for r in records.iter().filter(|r| r.decision != "allowed") {
                text_problems(r);
            }
            print!("{}", to_yaml_stream(&objects)?);
            eprintln!("{}", summary.line());
        }
    }
    Ok(summary.exit())
}

/// Warnings and refusals on stderr, exactly as kubectl prints what the
/// apiserver returned; the result line on stdout.
fn text(r: &Record) {
    let what = format!("agenticsession.vteam.ambient-code/{}", short_name(&r.name));
    text_problems(r);
    // Skipped kinds are only counted in the summary: a kustomize build has
    // dozens.
    if r.decision == "allowed" {
        let changes = match r.patch.as_ref().and_then(Value::as_array) {
            Some(ops) => format!(" ({MUTATING}: {} patch operations)", ops.len()),
            None => String::new(),
        };
        println!("{what} allowed{changes}");
    }
}

fn short_name(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn text_problems(r: &Record) {
    // The apiserver warns of a deprecated version before anything else.
    if r.api_version() == Some(crate::api::v1alpha1::API_VERSION) {
        eprintln!("Warning: {}", crate::api::v1alpha1::DEPRECATION_WARNING);
    }
    for w in &r.warnings {
        eprintln!("Warning: {w}");
    }
    match r.decision.as_str() {
        "denied" => eprint!("{}", kubectl_error(r)),
        "error" => eprintln!(
            "error: {}: {}",
            r.origin(),
            r.message.as_deref().unwrap_or_default()
        ),
        _ => {}
    }
}

/// What kubectl prints for the apiserver's refusal (its `cmdutil.CheckErr`):
/// an `Invalid` status with details reads like built-in validation, one
/// `field: message` per distinct cause; anything else is the status message
/// behind the verb and file kubectl adds (`AddSourceToErr`).
fn kubectl_error(r: &Record) -> String {
    if r.reason.as_deref() == Some("Invalid") {
        let head = format!(
            "The {} {:?} is invalid",
            crate::api::KIND,
            short_name(&r.name)
        );
        let mut lines: Vec<String> = Vec::new();
        for c in &r.causes {
            let line = format!("{}: {}", c.field, c.message);
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        return match lines.as_slice() {
            [] => format!("{head}\n"),
            [one] => format!("{head}: {one}\n"),
            many => format!("{head}: \n* {}\n", many.join("\n* ")),
        };
    }
    let verb = match r.operation {
        Some(Operation::Update) => "replacing",
        _ => "creating",
    };
    format!(
        "Error from server ({}): error when {verb} \"{}\": admission webhook \"{}\" denied the request: {}\n",
        r.reason.as_deref().unwrap_or_default(),
        r.origin(),
        super::review_names::VALIDATING,
        r.message.as_deref().unwrap_or_default()
    )
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no place for other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn junit(records: &[Record], s: &Summary) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"agentic-webhook review\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">\n",
        s.objects, s.denied, s.errors, s.skipped
    ));
    out.push_str(&format!(
        "  <testsuite name=\"agentic-webhook review\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">\n",
        s.objects, s.denied, s.errors, s.skipped
    ));
    for r in records {
        let name = if r.name.is_empty() {
            r.origin()
        } else {
            format!("{} ({})", r.name, r.origin())
        };
        out.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\">",
            xml(&r.file),
            xml(&name)
        ));
        match r.decision.as_str() {
            "denied" => out.push_str(&format!(
                "\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    ",
                xml(&r.rules.join(",")),
                xml(r.message.as_deref().unwrap_or_default()),
                xml(&r
                    .causes
                    .iter()
                    .map(|c| format!("{} [{}]: {}", c.field, c.rule, c.message))
                    .collect::<Vec<_>>()
                    .join("\n"))
            )),
            "error" => out.push_str(&format!(
                "\n      <error message=\"{}\"/>\n    ",
                xml(r.message.as_deref().unwrap_or_default())
            )),
            "skipped" => out.push_str("\n      <skipped message=\"not an AgenticSession\"/>\n    "),
            _ => {}
        }
        if !r.warnings.is_empty() {
            out.push_str(&format!(
                "\n      <system-err>{}</system-err>\n    ",
                xml(&r
                    .warnings
                    .iter()
                    .map(|w| format!("Warning: {w}"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            ));
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
