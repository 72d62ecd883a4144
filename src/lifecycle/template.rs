//! The runner pod template a platform team supplies
//! (`reconcile --runner-pod-template`): read strictly (an unknown field is an
//! error, as with `kubectl apply --validate=strict`), checked against what
//! the reconciler owns, and optionally against the `restricted` Pod Security
//! Standard. [`super::world::runner_pod`] merges it with each session. Pure.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use serde_json::Value;

use crate::api::resource::AgenticSession;

use super::contract::Contract;
use super::restricted;
use super::world::{
    ANNOTATION_DEFAULT_CONTAINER, ANNOTATION_GENERATION, ANNOTATION_REPOS, OWNED_LABELS,
    RunnerConfig, runner_pod,
};

/// One thing wrong with a template, at a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("{0}")]
    Unreadable(String),
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
    #[error("the runner pod it makes breaks the restricted Pod Security Standard: {}", list(.0))]
    NotRestricted(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A template read from a file, and where in that file it sits (for paths).
#[derive(Debug)]
struct Parsed {
    template: PodTemplateSpec,
    prefix: String,
}

/// Read `text` (YAML or JSON) as a template, check it, and return `base`
/// with it. With `require_restricted`, the pod it makes must pass the
/// restricted profile.
pub fn load(
    text: &str,
    base: &RunnerConfig,
    require_restricted: bool,
) -> Result<RunnerConfig, TemplateError> {
    let Parsed { template, prefix } = parse(text)?;
    let problems: Vec<Problem> = check_owned(&template, &base.contract)
        .into_iter()
        .map(|p| Problem::new(format!("{prefix}{}", p.field), p.message))
        .collect();
    if !problems.is_empty() {
        return Err(TemplateError::Invalid(problems));
    }
    let cfg = RunnerConfig {
        template,
        ..base.clone()
    };
    if require_restricted {
        check_restricted(&cfg)?;
    }
    Ok(cfg)
}

/// The runner config from a template text and a contract text (either may
/// be absent): the contract from its own file, else from the template's
/// ConfigMap (key `runner-contract.yaml`), else the shipped one; then the
/// template checked against that contract.
pub fn load_pair(
    template: Option<&str>,
    contract: Option<&str>,
    base: &RunnerConfig,
    require_restricted: bool,
) -> Result<RunnerConfig, TemplateError> {
    let beside = match template {
        Some(t) => super::contract::from_configmap(t).ok().flatten(),
        None => None,
    };
    let contract = match contract {
        Some(text) => super::contract::load(text)?,
        None => beside.unwrap_or_else(|| (*base.contract).clone()),
    };
    let base = RunnerConfig {
        contract: std::sync::Arc::new(contract),
        ..base.clone()
    };
    match template {
        Some(text) => load(text, &base, require_restricted),
        None => {
            if require_restricted {
                check_restricted(&base)?;
            }
            Ok(base)
        }
    }
}

/// The restricted profile over the pod `cfg` makes (paths are the pod's).
pub fn check_restricted(cfg: &RunnerConfig) -> Result<(), TemplateError> {
    let pod = runner_pod(&sample_session(), 1, cfg);
    let problems = restricted::check(&pod.metadata, &pod.spec.unwrap_or_default());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TemplateError::NotRestricted(problems))
    }
}

fn sample_session() -> AgenticSession {
    let mut s = AgenticSession::default();
    s.metadata.name = Some("template-check".into());
    s.metadata.namespace = Some("default".into());
    s.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    s
}

fn parse(text: &str) -> Result<Parsed, TemplateError> {
    let (value, prefix) = unwrap_kind(read_value(text)?)?;
    let template = strict(value, &prefix)?;
    Ok(Parsed { template, prefix })
}

fn read_value(text: &str) -> Result<Value, TemplateError> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map_err(|e| TemplateError::Unreadable(format!("invalid JSON: {e}")));
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| TemplateError::Unreadable(format!("invalid YAML: {e}")))?;
    let mut docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    match docs.len() {
        1 => Ok(docs.remove(0)),
        n => Err(TemplateError::Unreadable(format!(
            "expected one object, found {n} documents"
        ))),
    }
}

/// The PodTemplateSpec inside what was given, and the path prefix to it.
fn unwrap_kind(doc: Value) -> Result<(Value, String), TemplateError> {
    let Value::Object(mut obj) = doc else {
        return Err(TemplateError::Unreadable(
            "expected an object (a PodTemplateSpec)".into(),
        ));
    };
    let kind = obj.get("kind").and_then(Value::as_str).map(str::to_owned);
    match kind.as_deref() {
        None => Ok((Value::Object(obj), String::new())),
        Some("PodTemplate") => match obj.remove("template") {
            Some(t) => Ok((t, "template.".into())),
            None => Err(TemplateError::Invalid(vec![Problem::new(
                "template",
                "Required value",
            )])),
        },
        Some("Pod") => {
            // A Pod describes itself; only its labels, annotations and spec
            // are a template (so `kubectl get pod -o yaml` output works).
            let mut meta = match obj.remove("metadata") {
                Some(Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            meta.retain(|k, _| k == "labels" || k == "annotations");
            let mut t = serde_json::Map::new();
            t.insert("metadata".into(), Value::Object(meta));
            if let Some(spec) = obj.remove("spec") {
                t.insert("spec".into(), spec);
            }
            Ok((Value::Object(t), String::new()))
        }
        Some("ConfigMap") => {
            let data = match obj.remove("data") {
                Some(Value::Object(d)) => d,
                _ => serde_json::Map::new(),
            };
            let (key, text) = pick_key(data)?;
            let (inner, prefix) = unwrap_kind(read_value(&text)?)?;
            if inner.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
                return Err(TemplateError::Unreadable(
                    "a ConfigMap inside a ConfigMap".into(),
                ));
            }
            Ok((inner, format!("data[{key}].{prefix}")))
        }
        Some(other) => Err(TemplateError::Unreadable(format!(
            "kind {other:?}: expected a PodTemplateSpec (no kind), a PodTemplate, a Pod, \
             or a ConfigMap holding one"
        ))),
    }
}

/// The ConfigMap key that holds the template: the only key, or `pod-template.yaml`.
pub const CONFIGMAP_KEY: &str = "pod-template.yaml";

fn pick_key(data: serde_json::Map<String, Value>) -> Result<(String, String), TemplateError> {
    let keys: Vec<String> = data.keys().cloned().collect();
    let key = match keys.as_slice() {
        [only] => only.clone(),
        _ if data.contains_key(CONFIGMAP_KEY) => CONFIGMAP_KEY.to_owned(),
        _ => {
            return Err(TemplateError::Unreadable(format!(
                "ConfigMap: found keys [{}]: keep one, or name it {CONFIGMAP_KEY}",
                keys.join(", ")
            )));
        }
    };
    match data.get(&key) {
        Some(Value::String(text)) => Ok((key, text.clone())),
        _ => Err(TemplateError::Unreadable(format!(
            "ConfigMap: data[{key}] is not a string"
        ))),
    }
}

/// Typed, refusing any field a PodTemplateSpec does not have.
fn strict(mut value: Value, prefix: &str) -> Result<PodTemplateSpec, TemplateError> {
    quantities_as_strings(&mut value);
    let template: PodTemplateSpec = serde_path_to_error::deserialize(&value).map_err(|e| {
        TemplateError::Invalid(vec![Problem::new(
            format!("{prefix}{}", e.path()),
            e.inner().to_string(),
        )])
    })?;
    let back = serde_json::to_value(&template).unwrap_or_default();
    let mut unknown = Vec::new();
    unknown_fields(&value, &back, prefix.trim_end_matches('.'), &mut unknown);
    if unknown.is_empty() {
        Ok(template)
    } else {
        Err(TemplateError::Invalid(unknown))
    }
}

/// YAML `cpu: 1` is a number; a Quantity is a string to the typed model.
fn quantities_as_strings(v: &mut Value) {
    fn stringify(v: &mut Value) {
        if let Value::Number(n) = v {
            *v = Value::String(n.to_string());
        }
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match (k.as_str(), child) {
                    ("sizeLimit", c) => stringify(c),
                    ("limits" | "requests" | "overhead", Value::Object(q)) => {
                        q.values_mut().for_each(stringify)
                    }
                    (_, c) => quantities_as_strings(c),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(quantities_as_strings),
        _ => {}
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Fields of `given` that did not survive a round trip through the type.
fn unknown_fields(given: &Value, back: &Value, path: &str, out: &mut Vec<Problem>) {
    match (given, back) {
        (Value::Object(g), Value::Object(b)) => {
            for (k, v) in g {
                match b.get(k) {
                    _ if v.is_null() => {}
                    None => out.push(Problem::new(join(path, k), "unknown field")),
                    Some(bv) => unknown_fields(v, bv, &join(path, k), out),
                }
            }
        }
        (Value::Array(g), Value::Array(b)) => {
            for (i, (v, bv)) in g.iter().zip(b).enumerate() {
                unknown_fields(v, bv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

const SET_BY_RECONCILER: &str = "Forbidden: set by the reconciler";

/// What the template may not say because the reconciler says it.
fn check_owned(t: &PodTemplateSpec, contract: &Contract) -> Vec<Problem> {
    let mut out = Vec::new();
    let meta = t.metadata.clone().unwrap_or_default();
    for (field, set) in [
        ("metadata.name", meta.name.is_some()),
        ("metadata.generateName", meta.generate_name.is_some()),
        ("metadata.namespace", meta.namespace.is_some()),
        ("metadata.ownerReferences", meta.owner_references.is_some()),
    ] {
        if set {
            out.push(Problem::new(field, SET_BY_RECONCILER));
        }
    }
    for key in meta.labels.iter().flat_map(|l| l.keys()) {
        if OWNED_LABELS.contains(&key.as_str()) || contract.pod_labels.contains_key(key) {
            out.push(Problem::new(
                format!("metadata.labels[{key}]"),
                SET_BY_RECONCILER,
            ));
        }
    }
    for key in meta.annotations.iter().flat_map(|a| a.keys()) {
        if key == ANNOTATION_REPOS
            || key == ANNOTATION_GENERATION
            || key == ANNOTATION_DEFAULT_CONTAINER
        {
            out.push(Problem::new(
                format!("metadata.annotations[{key}]"),
                SET_BY_RECONCILER,
            ));
        }
    }
    let Some(spec) = &t.spec else { return out };
    if let Some(sa) = &contract.service_account {
        if spec.service_account_name.is_some() || spec.service_account.is_some() {
            out.push(Problem::new(
                "spec.serviceAccountName",
                "Forbidden: set by the reconciler (the runner contract's service account)",
            ));
        }
        let volume = sa.token_file.as_ref().map(|f| f.volume.as_str());
        for (i, v) in spec.volumes.iter().flatten().enumerate() {
            if Some(v.name.as_str()) == volume {
                out.push(Problem::new(
                    format!("spec.volumes[{i}].name"),
                    format!(
                        "Duplicate value: {:?} is the runner contract's token volume",
                        v.name
                    ),
                ));
            }
        }
    }
    if let Some(policy) = spec.restart_policy.as_deref().filter(|p| *p != "Never") {
        out.push(Problem::new(
            "spec.restartPolicy",
            format!(
                "Unsupported value: {policy:?}: supported values: \"Never\" \
                 (the reconciler retries a failed runner as a new attempt)"
            ),
        ));
    }
    let mut names = BTreeSet::new();
    let init = spec.init_containers.iter().flatten().enumerate();
    for (i, c) in init {
        let path = format!("spec.initContainers[{i}]");
        if c.name == contract.container {
            out.push(Problem::new(
                format!("{path}.name"),
                format!(
                    "Forbidden: the runner is the container named {:?} in spec.containers",
                    contract.container
                ),
            ));
        }
        check_container(&path, c, contract, &mut names, &mut out);
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        check_container(&path, c, contract, &mut names, &mut out);
    }
    out
}

fn check_container(
    path: &str,
    c: &Container,
    contract: &Contract,
    names: &mut BTreeSet<String>,
    out: &mut Vec<Problem>,
) {
    let runner = c.name == contract.container;
    let port = contract.port;
    if !names.insert(c.name.clone()) {
        out.push(Problem::new(
            format!("{path}.name"),
            format!("Duplicate value: {:?}", c.name),
        ));
    }
    for (i, p) in c.ports.iter().flatten().enumerate() {
        if p.container_port == port || (runner && p.name.as_deref() == Some(&contract.port_name)) {
            out.push(Problem::new(
                format!("{path}.ports[{i}]"),
                format!(
                    "Forbidden: port {port} named {:?} is the runner's, set by the reconciler",
                    contract.port_name
                ),
            ));
        }
    }
    // The contract's variables for this container are the session's.
    let owned: BTreeSet<String> = contract
        .env_names(&c.name)
        .chain(runner.then(|| contract.reserved()).into_iter().flatten())
        .collect();
    for (i, e) in c.env.iter().flatten().enumerate() {
        if owned.contains(&e.name) {
            out.push(Problem::new(
                format!("{path}.env[{i}].name"),
                format!(
                    "Forbidden: {:?} is set by the reconciler (the runner contract)",
                    e.name
                ),
            ));
        }
    }
    if !runner {
        return;
    }
    if c.readiness_probe.is_some() {
        out.push(Problem::new(
            format!("{path}.readinessProbe"),
            SET_BY_RECONCILER,
        ));
    }
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
