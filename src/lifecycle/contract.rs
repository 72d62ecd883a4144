//! The runner contract: what a runner release expects of the pod the
//! reconciler makes for a session and of the notices it sends, as data
//! (`runner-contract.yaml` beside the pod template), so a platform team
//! follows a new runner release by editing a file. Read strictly (unknown
//! fields, unknown sources, bad names are errors at start and on reload),
//! then rendered per session by [`super::world`] and [`super::notice`]. Pure.
//!
//! The shipped contract is the ambient-code platform runner's, derived from
//! its operator (`components/operator/internal/handlers/sessions.go`) and
//! runner (`ambient_runner/endpoints/`) at platform commit `0b59fe7`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

use crate::api::Version;
use crate::api::resource::AgenticSession;

use super::template::{Problem, TemplateError};

/// The shipped pod template and contract, one ConfigMap.
pub const SHIPPED: &str = include_str!("../../manifests/base/runner-template.yaml");
/// The ConfigMap key (and file name) of a contract.
pub const CONFIGMAP_KEY: &str = "runner-contract.yaml";
const KIND: &str = "RunnerContract";
const API_VERSION: &str = "agentic.vteam.ambient-code/v1";

/// The shipped contract (the ambient-code runner's at platform `0b59fe7`).
pub static AMBIENT: LazyLock<Contract> =
    LazyLock::new(|| shipped().unwrap_or_else(|_| Contract::minimal()));

/// The contract in the shipped ConfigMap, or why it does not load (a test
/// keeps that from happening).
pub fn shipped() -> Result<Contract, TemplateError> {
    match from_configmap(SHIPPED)? {
        Some(c) => Ok(c),
        None => Err(TemplateError::Unreadable(format!(
            "the shipped ConfigMap has no {CONFIGMAP_KEY}"
        ))),
    }
}

/// A name made from the session's: `{name}` is the session name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate(String);

impl NameTemplate {
    pub fn render(&self, session: &str) -> String {
        self.0.replace("{name}", session)
    }

    fn parse(text: &str, field: &str, out: &mut Vec<Problem>) -> Self {
        let rest = text.replace("{name}", "x");
        if rest.contains(['{', '}']) {
            out.push(Problem::new(
                field,
                format!("Invalid value: {text:?}: the only placeholder is {{name}}"),
            ));
        } else if !is_dns_subdomain(&rest) {
            out.push(Problem::new(
                field,
                format!("Invalid value: {text:?}: must make a DNS subdomain name"),
            ));
        }
        NameTemplate(text.to_owned())
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// A field of the session (in the contract's `sessionVersion`).
    Session(Vec<String>),
    /// The runner port (`runner.port`).
    RunnerPort,
    /// The attempt number (`attempt`).
    Attempt,
}

impl Path {
    fn parse(text: &str) -> Result<Path, String> {
        let segments = segments(text)?;
        match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["runner", "port"] => Ok(Path::RunnerPort),
            ["attempt"] => Ok(Path::Attempt),
            ["metadata" | "spec" | "status", ..] if segments.len() > 1 => {
                Ok(Path::Session(segments))
            }
            _ => Err(format!(
                "{text:?}: a source is metadata.…, spec.…, status.…, runner.port or attempt"
            )),
        }
    }

    fn resolve<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        let Path::Session(segments) = self else {
            return None;
        };
        segments.iter().try_fold(doc, |v, s| match v {
            Value::Object(m) => m.get(s),
            Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
    }

    /// `spec.environmentVariables[X]`: the variable X of the session.
    fn session_variable(&self) -> Option<&str> {
        match self {
            Path::Session(s) => match s.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["spec", "environmentVariables", name] => Some(name),
                _ => None,
            },
            _ => None,
        }
    }
}

/// `a.b[c.d].e` → `[a, b, c.d, e]`.
fn segments(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars();
    let bad = || {
        Err(format!(
            "{text:?}: not a field path (a.b, a[key with dots])"
        ))
    };
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if cur.is_empty() {
                    return bad();
                }
                out.push(std::mem::take(&mut cur));
            }
            '[' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                let key: String = chars.by_ref().take_while(|c| *c != ']').collect();
                if key.is_empty() {
                    return bad();
                }
                out.push(key);
                match chars.clone().next() {
                    None => {}
                    Some('.') => {
                        chars.next();
                    }
                    Some(_) => return bad(),
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' => cur.push(c),
            _ => return bad(),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    } else if out.is_empty() || text.ends_with('.') {
        return bad();
    }
    Ok(out)
}

/// How a value is written into a variable (the operator's Go formats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `%s`: strings as they are, numbers and booleans as JSON writes them.
    Text,
    /// `%d`: an integer (0 when absent).
    Integer,
    /// `%.Nf`: a decimal with N places (0 when absent).
    Fixed(usize),
    /// Go's `json.Marshal`: sorted keys, `<`, `>`, `&` escaped.
    Json,
}

impl Format {
    fn parse(text: &str) -> Option<Format> {
        match text {
            "%s" | "text" => Some(Format::Text),
            "%d" => Some(Format::Integer),
            "json" => Some(Format::Json),
            _ => text
                .strip_prefix("%.")
                .and_then(|t| t.strip_suffix('f'))
                .and_then(|n| n.parse().ok())
                .filter(|n| *n <= 17)
                .map(Format::Fixed),
        }
    }

    fn write(self, v: Option<&Value>) -> String {
        match (self, v) {
            (Format::Integer, v) => {
                let n = v.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)));
                n.unwrap_or(0).to_string()
            }
            (Format::Fixed(places), v) => {
                format!("{:.places$}", v.and_then(Value::as_f64).unwrap_or(0.0))
            }
            (Format::Json, Some(v)) => go_json(v),
            (Format::Json, None) => String::new(),
            (Format::Text, Some(Value::String(s))) => s.clone(),
            (Format::Text, None | Some(Value::Null)) => String::new(),
            (Format::Text, Some(v @ (Value::Object(_) | Value::Array(_)))) => go_json(v),
            (Format::Text, Some(v)) => v.to_string(),
        }
    }
}

/// What Go's `json.Marshal` writes for a decoded JSON value: keys sorted
/// (serde_json's map is ordered), whole floats without a fraction, and the
/// HTML-sensitive characters escaped.
pub fn go_json(v: &Value) -> String {
    fn whole(v: &Value) -> Value {
        match v {
            Value::Number(n) if n.is_f64() => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Value::from(f as i64),
                _ => v.clone(),
            },
            Value::Array(a) => Value::Array(a.iter().map(whole).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), whole(v))).collect())
            }
            other => other.clone(),
        }
    }
    let text = serde_json::to_string(&whole(v)).unwrap_or_default();
    // These characters appear only inside strings in JSON text.
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// When a variable is set.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct When {
    /// Only when its value is set (not blank, not an empty list or map).
    pub value_set: bool,
    /// Only when this field is set.
    pub if_set: Option<Path>,
    /// Never when this field has this value.
    pub unless: Option<(Path, String)>,
}

/// Which key of the runner's token Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKey {
    /// The per-attempt token notices carry.
    Notice,
    /// A token of the session's service account.
    ServiceAccount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The first of these that is set.
    From(Vec<Path>),
    Value(String),
    Secret(SecretKey),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    pub name: String,
    pub source: Source,
    pub format: Format,
    pub trim: bool,
    pub when: When,
}

/// One notice: where to POST, and its JSON body with `{placeholders}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub path: String,
    pub body: Value,
}

impl Call {
    /// The body with each `"{field}"` string replaced by `fields[field]`.
    pub fn body_with(&self, fields: &[(&str, &str)]) -> Value {
        fn fill(v: &Value, fields: &[(&str, &str)]) -> Value {
            match v {
                Value::String(s) => {
                    let key = s.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
                    match key.and_then(|k| fields.iter().find(|(f, _)| *f == k)) {
                        Some((_, value)) => Value::String((*value).to_owned()),
                        None => v.clone(),
                    }
                }
                Value::Array(a) => Value::Array(a.iter().map(|v| fill(v, fields)).collect()),
                Value::Object(m) => Value::Object(
                    m.iter()
                        .map(|(k, v)| (k.clone(), fill(v, fields)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        fill(&self.body, fields)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Notices {
    pub header: String,
    pub default_branch: String,
    pub workflow: Call,
    pub repo_add: Call,
    pub repo_remove: Call,
}

/// The token file of the session's service account, refreshed by the kubelet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFile {
    pub volume: String,
    pub containers: Vec<String>,
    pub mount_path: String,
    pub path: String,
    pub expiration_seconds: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub name: NameTemplate,
    pub cluster_role: String,
    pub role_binding: NameTemplate,
    pub annotations: BTreeMap<String, Path>,
    pub token_file: Option<TokenFile>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Contract {
    pub name: String,
    pub session_version: Version,
    pub container: String,
    pub port_name: String,
    pub port: i32,
    pub health: String,
    pub pod_labels: BTreeMap<String, NameTemplate>,
    pub token_secret: NameTemplate,
    pub notice_key: String,
    pub service_account_key: Option<String>,
    pub service_account: Option<ServiceAccount>,
    /// Containers that get the session's own `environmentVariables`.
    pub session_variables: Vec<String>,
    /// Per container name, its variables in order.
    pub env: BTreeMap<String, Vec<Var>>,
    pub notices: Notices,
}

// ---- the file, as written ------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawContract {
    api_version: String,
    kind: String,
    name: String,
    session_version: String,
    runner: RawRunner,
    #[serde(default)]
    pod_labels: BTreeMap<String, String>,
    token_secret: RawTokenSecret,
    #[serde(default)]
    service_account: Option<RawServiceAccount>,
    #[serde(default)]
    session_variables: Vec<String>,
    #[serde(default)]
    env: Vec<RawEnvGroup>,
    notices: RawNotices,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRunner {
    container: String,
    port: RawPort,
    health: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPort {
    name: String,
    number: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTokenSecret {
    name: String,
    notice_key: String,
    #[serde(default)]
    service_account_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawServiceAccount {
    name: String,
    cluster_role: String,
    role_binding: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    token_file: Option<RawTokenFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTokenFile {
    volume: String,
    containers: Vec<String>,
    mount_path: String,
    path: String,
    #[serde(default = "an_hour")]
    expiration_seconds: i64,
}

fn an_hour() -> i64 {
    3600
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEnvGroup {
    containers: Vec<String>,
    vars: Vec<RawVar>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawVar {
    name: String,
    #[serde(default)]
    from: Option<OneOrMany>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    secret_key: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    trim: bool,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    if_set: Option<String>,
    #[serde(default)]
    unless: Option<RawUnless>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawUnless {
    path: String,
    equals: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNotices {
    header: String,
    default_branch: String,
    workflow: RawCall,
    repo_add: RawCall,
    repo_remove: RawCall,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCall {
    path: String,
    body: Value,
}

// ---- reading -----------------------------------------------------------

/// The contract under [`CONFIGMAP_KEY`] of a ConfigMap manifest, if it has one.
pub fn from_configmap(text: &str) -> Result<Option<Contract>, TemplateError> {
    let doc: Value = serde_saphyr::from_str(text)
        .map_err(|e| TemplateError::Unreadable(format!("invalid YAML: {e}")))?;
    if doc.get("kind").and_then(Value::as_str) != Some("ConfigMap") {
        return Ok(None);
    }
    match doc.get("data").and_then(|d| d.get(CONFIGMAP_KEY)) {
        None => Ok(None),
        Some(Value::String(inner)) => parse(inner)
            .map(Some)
            .map_err(|e| prefixed(e, &format!("data[{CONFIGMAP_KEY}]."))),
        Some(_) => Err(TemplateError::Unreadable(format!(
            "ConfigMap: data[{CONFIGMAP_KEY}] is not a string"
        ))),
    }
}

fn prefixed(e: TemplateError, prefix: &str) -> TemplateError {
    match e {
        TemplateError::Invalid(ps) => TemplateError::Invalid(
            ps.into_iter()
                .map(|p| Problem::new(format!("{prefix}{}", p.field), p.message))
                .collect(),
        ),
        other => other,
    }
}

/// Read a contract file (YAML or JSON; a ConfigMap holding one under
/// [`CONFIGMAP_KEY`] works too), strictly.
pub fn load(text: &str) -> Result<Contract, TemplateError> {
    if let Some(c) = from_configmap(text)? {
        return Ok(c);
    }
    parse(text)
}

fn parse(text: &str) -> Result<Contract, TemplateError> {
    let doc: Value = serde_saphyr::from_str(text)
        .map_err(|e| TemplateError::Unreadable(format!("invalid YAML: {e}")))?;
    let raw: RawContract = serde_path_to_error::deserialize(&doc).map_err(|e| {
        TemplateError::Invalid(vec![Problem::new(
            e.path().to_string(),
            e.inner().to_string(),
        )])
    })?;
    let mut out = Vec::new();
    let c = check(raw, &mut out);
    if out.is_empty() {
        Ok(c)
    } else {
        Err(TemplateError::Invalid(out))
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn path_or(text: &str, field: &str, out: &mut Vec<Problem>) -> Path {
    Path::parse(text).unwrap_or_else(|e| {
        out.push(Problem::new(field, format!("Invalid value: {e}")));
        Path::Attempt
    })
}

fn check(raw: RawContract, out: &mut Vec<Problem>) -> Contract {
    for (field, given, want) in [
        ("apiVersion", &raw.api_version, API_VERSION),
        ("kind", &raw.kind, KIND),
    ] {
        if given != want {
            out.push(Problem::new(
                field,
                format!("Unsupported value: {given:?}: supported values: {want:?}"),
            ));
        }
    }
    let session_version = Version::from_version(&raw.session_version).unwrap_or_else(|| {
        out.push(Problem::new(
            "sessionVersion",
            format!(
                "Unsupported value: {:?}: supported values: \"v1alpha1\", \"v1alpha2\"",
                raw.session_version
            ),
        ));
        Version::V1Alpha1
    });
    let r = &raw.runner;
    if r.container.is_empty() {
        out.push(Problem::new("runner.container", "Required value"));
    }
    if !(1..=65535).contains(&r.port.number) {
        out.push(Problem::new(
            "runner.port.number",
            format!(
                "Invalid value: {}: must be between 1 and 65535",
                r.port.number
            ),
        ));
    }
    if r.port.name.is_empty() || r.port.name.len() > 15 {
        out.push(Problem::new(
            "runner.port.name",
            "Invalid value: a port name has 1 to 15 characters",
        ));
    }
    if !r.health.starts_with('/') {
        out.push(Problem::new(
            "runner.health",
            "Invalid value: an absolute path (/health)",
        ));
    }
    let pod_labels = raw
        .pod_labels
        .iter()
        .map(|(k, v)| {
            let t = NameTemplate(v.clone());
            if v.replace("{name}", "x").contains(['{', '}']) {
                out.push(Problem::new(
                    format!("podLabels[{k}]"),
                    "Invalid value: the only placeholder is {name}",
                ));
            }
            (k.clone(), t)
        })
        .collect();
    let token_secret = NameTemplate::parse(&raw.token_secret.name, "tokenSecret.name", out);
    let service_account_key = raw.token_secret.service_account_key.clone();
    let service_account = raw.service_account.map(|sa| ServiceAccount {
        name: NameTemplate::parse(&sa.name, "serviceAccount.name", out),
        cluster_role: sa.cluster_role,
        role_binding: NameTemplate::parse(&sa.role_binding, "serviceAccount.roleBinding", out),
        annotations: sa
            .annotations
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    path_or(p, &format!("serviceAccount.annotations[{k}]"), out),
                )
            })
            .collect(),
        token_file: sa.token_file.map(|t| TokenFile {
            volume: t.volume,
            containers: t.containers,
            mount_path: t.mount_path,
            path: t.path,
            expiration_seconds: t.expiration_seconds,
        }),
    });
    if service_account_key.is_some() && service_account.is_none() {
        out.push(Problem::new(
            "tokenSecret.serviceAccountKey",
            "Forbidden: a service account token needs serviceAccount",
        ));
    }
    if let Some(t) = service_account.as_ref().and_then(|s| s.token_file.as_ref())
        && t.expiration_seconds < 600
    {
        out.push(Problem::new(
            "serviceAccount.tokenFile.expirationSeconds",
            "Invalid value: at least 600 (the apiserver's minimum)",
        ));
    }
    let mut env: BTreeMap<String, Vec<Var>> = BTreeMap::new();
    for (g, group) in raw.env.into_iter().enumerate() {
        let vars: Vec<Var> = group
            .vars
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                var(
                    v,
                    &format!("env[{g}].vars[{i}]"),
                    service_account_key.is_some(),
                    out,
                )
            })
            .collect();
        for c in group.containers {
            let list = env.entry(c.clone()).or_default();
            for v in &vars {
                if list.iter().any(|x| x.name == v.name) {
                    out.push(Problem::new(
                        format!("env[{g}]"),
                        format!("Duplicate value: {:?} for container {c:?}", v.name),
                    ));
                } else {
                    list.push(v.clone());
                }
            }
        }
    }
    let notices = raw.notices;
    let call = |c: RawCall, field: &str, out: &mut Vec<Problem>| {
        if !c.path.starts_with('/') {
            out.push(Problem::new(
                format!("notices.{field}.path"),
                "Invalid value: an absolute path",
            ));
        }
        if !c.body.is_object() {
            out.push(Problem::new(
                format!("notices.{field}.body"),
                "Invalid value: a JSON object",
            ));
        }
        Call {
            path: c.path,
            body: c.body,
        }
    };
    if notices.header.is_empty() || http::HeaderName::try_from(notices.header.as_str()).is_err() {
        out.push(Problem::new(
            "notices.header",
            "Invalid value: an HTTP header name",
        ));
    }
    let notices = Notices {
        header: notices.header,
        default_branch: notices.default_branch,
        workflow: call(notices.workflow, "workflow", out),
        repo_add: call(notices.repo_add, "repoAdd", out),
        repo_remove: call(notices.repo_remove, "repoRemove", out),
    };
    Contract {
        name: raw.name,
        session_version,
        container: raw.runner.container,
        port_name: raw.runner.port.name,
        port: raw.runner.port.number,
        health: raw.runner.health,
        pod_labels,
        token_secret,
        notice_key: raw.token_secret.notice_key,
        service_account_key,
        service_account,
        session_variables: raw.session_variables,
        env,
        notices,
    }
}

fn var(v: RawVar, at: &str, has_sa_key: bool, out: &mut Vec<Problem>) -> Option<Var> {
    if !is_env_name(&v.name) {
        out.push(Problem::new(
            format!("{at}.name"),
            format!(
                "Invalid value: {:?}: not an environment variable name",
                v.name
            ),
        ));
    }
    let source = match (v.from, v.value, v.secret_key) {
        (Some(from), None, None) => {
            let list = match from {
                OneOrMany::One(p) => vec![p],
                OneOrMany::Many(ps) => ps,
            };
            if list.is_empty() {
                out.push(Problem::new(format!("{at}.from"), "Required value"));
            }
            Source::From(
                list.iter()
                    .enumerate()
                    .map(|(i, p)| path_or(p, &format!("{at}.from[{i}]"), out))
                    .collect(),
            )
        }
        (None, Some(value), None) => Source::Value(value),
        (None, None, Some(key)) => match key.as_str() {
            "noticeKey" => Source::Secret(SecretKey::Notice),
            "serviceAccountKey" if has_sa_key => Source::Secret(SecretKey::ServiceAccount),
            "serviceAccountKey" => {
                out.push(Problem::new(
                    format!("{at}.secretKey"),
                    "Forbidden: tokenSecret.serviceAccountKey is not set",
                ));
                return None;
            }
            other => {
                out.push(Problem::new(
                    format!("{at}.secretKey"),
                    format!(
                        "Unsupported value: {other:?}: supported values: \"noticeKey\", \"serviceAccountKey\""
                    ),
                ));
                return None;
            }
        },
        _ => {
            out.push(Problem::new(
                at,
                "Invalid value: exactly one of from, value, secretKey",
            ));
            return None;
        }
    };
    let format = match v.format.as_deref() {
        None => Format::Text,
        Some(f) => Format::parse(f).unwrap_or_else(|| {
            out.push(Problem::new(
                format!("{at}.format"),
                format!(
                    "Unsupported value: {f:?}: supported values: \"%s\", \"%d\", \"%.Nf\", \"json\""
                ),
            ));
            Format::Text
        }),
    };
    let value_set = match v.when.as_deref() {
        None | Some("always") => false,
        Some("set") => true,
        Some(other) => {
            out.push(Problem::new(
                format!("{at}.when"),
                format!("Unsupported value: {other:?}: supported values: \"always\", \"set\""),
            ));
            false
        }
    };
    let when = When {
        value_set,
        if_set: v.if_set.map(|p| path_or(&p, &format!("{at}.ifSet"), out)),
        unless: v.unless.map(|u| {
            (
                path_or(&u.path, &format!("{at}.unless.path"), out),
                u.equals,
            )
        }),
    };
    Some(Var {
        name: v.name,
        source,
        format,
        trim: v.trim,
        when,
    })
}

// ---- rendering -----------------------------------------------------------

/// What a rendered variable is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendered {
    Value(String),
    /// The key of the runner's token Secret.
    Secret {
        name: String,
        key: String,
    },
}

/// A session as the contract reads it.
pub struct SessionDoc {
    doc: Value,
    attempt: i64,
    port: i32,
}

fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(_) => true,
    }
}

impl SessionDoc {
    fn get(&self, p: &Path) -> Option<Value> {
        match p {
            Path::RunnerPort => Some(Value::from(self.port)),
            Path::Attempt => Some(Value::from(self.attempt)),
            Path::Session(_) => p.resolve(&self.doc).cloned(),
        }
    }

    /// A field as text (for labels and annotations): blank when unset.
    pub fn text(&self, p: &Path) -> String {
        Format::Text.write(self.get(p).as_ref())
    }
}

impl Contract {
    /// A last resort when even the shipped contract does not load: the
    /// runner's port and token, nothing from the session.
    fn minimal() -> Contract {
        Contract {
            name: "minimal".into(),
            session_version: Version::V1Alpha2,
            container: "runner".into(),
            port_name: "http".into(),
            port: 8001,
            health: "/health".into(),
            pod_labels: BTreeMap::new(),
            token_secret: NameTemplate("ambient-runner-token-{name}".into()),
            notice_key: "agui-token".into(),
            service_account_key: None,
            service_account: None,
            session_variables: Vec::new(),
            env: BTreeMap::new(),
            notices: Notices {
                header: "X-Ambient-Session-Token".into(),
                default_branch: "main".into(),
                workflow: Call {
                    path: "/workflow".into(),
                    body: serde_json::json!({"gitUrl": "{gitUrl}", "branch": "{branch}", "path": "{path}"}),
                },
                repo_add: Call {
                    path: "/repos/add".into(),
                    body: serde_json::json!({"url": "{url}", "branch": "{branch}", "name": "{name}"}),
                },
                repo_remove: Call {
                    path: "/repos/remove".into(),
                    body: serde_json::json!({"name": "{name}"}),
                },
            },
        }
    }

    /// The session as this contract's paths read it.
    pub fn doc(&self, session: &AgenticSession, attempt: i64) -> SessionDoc {
        let mut v2 = serde_json::to_value(session).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v2 {
            m.insert(
                "apiVersion".into(),
                Value::from(crate::api::v1alpha2::API_VERSION),
            );
            m.insert("kind".into(), Value::from(crate::api::KIND));
        }
        let doc = match self.session_version {
            Version::V1Alpha2 => Some(v2),
            Version::V1Alpha1 => {
                crate::conversion::object::convert_object(&v2.to_string(), Version::V1Alpha1)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
            }
        };
        SessionDoc {
            doc: doc.unwrap_or(Value::Null),
            attempt,
            port: self.port,
        }
    }

    /// The variables of container `container`, in the contract's order.
    pub fn env_for(
        &self,
        container: &str,
        doc: &SessionDoc,
        session: &str,
    ) -> Vec<(String, Rendered)> {
        let Some(vars) = self.env.get(container) else {
            return Vec::new();
        };
        let secret = self.token_secret.render(session);
        vars.iter()
            .filter_map(|v| {
                if let Some(p) = &v.when.if_set
                    && !is_set(doc.get(p).as_ref())
                {
                    return None;
                }
                if let Some((p, value)) = &v.when.unless
                    && doc.get(p).as_ref().and_then(Value::as_str) == Some(value.as_str())
                {
                    return None;
                }
                let rendered = match &v.source {
                    Source::Secret(k) => Rendered::Secret {
                        name: secret.clone(),
                        key: match k {
                            SecretKey::Notice => self.notice_key.clone(),
                            SecretKey::ServiceAccount => {
                                self.service_account_key.clone().unwrap_or_default()
                            }
                        },
                    },
                    Source::Value(s) => Rendered::Value(s.clone()),
                    Source::From(paths) => {
                        let found = paths
                            .iter()
                            .map(|p| doc.get(p))
                            .find(|v| is_set(v.as_ref()))
                            .flatten();
                        if v.when.value_set && found.is_none() {
                            return None;
                        }
                        let text = v.format.write(found.as_ref());
                        Rendered::Value(if v.trim { text.trim().to_owned() } else { text })
                    }
                };
                Some((v.name.clone(), rendered))
            })
            .collect()
    }

    /// The variable names the contract sets in `container`.
    pub fn env_names<'a>(&'a self, container: &str) -> impl Iterator<Item = String> + 'a {
        self.env
            .get(container)
            .into_iter()
            .flatten()
            .map(|v| v.name.clone())
    }

    /// Names a session may not set: every variable the contract sets, in
    /// any container, except those it reads from the session's own
    /// variables (`PARENT_SESSION_ID` from `spec.environmentVariables`).
    pub fn reserved(&self) -> BTreeSet<String> {
        let from_session: BTreeSet<&str> = self
            .env
            .values()
            .flatten()
            .filter_map(|v| match &v.source {
                Source::From(ps) => ps.iter().find_map(Path::session_variable),
                _ => None,
            })
            .collect();
        self.env
            .values()
            .flatten()
            .map(|v| v.name.as_str())
            .filter(|n| !from_session.contains(n))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
#[path = "contract_tests.rs"]
mod tests;
