//! Test helpers: build AdmissionReview JSON the way the apiserver shapes it
//! and run it through the same decode → rules path as the webhook.

use serde_json::{Value, json};

use super::review::{self, Operation, RequestBuilder, Verdict};
use super::{AdmissionService, Config, Policy, Principals};
use crate::api::Version;

pub const CONTROLLER: &str = "system:serviceaccount:agentic-system:agentic-reconciler";

pub fn config() -> Config {
    Config {
        principals: Principals {
            users: vec![CONTROLLER.to_owned()],
            groups: vec!["agentic:controllers".to_owned()],
            ..Principals::default()
        },
        ..Config::default()
    }
}

/// A session object of `version` with `spec`.
pub fn session(version: Version, spec: Value) -> Value {
    json!({
        "apiVersion": version.api_version(),
        "kind": "AgenticSession",
        "metadata": {"name": "s1", "namespace": "team-a", "generation": 1,
                     "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
        "spec": spec,
    })
}

/// `session` with a status.
pub fn with_status(mut obj: Value, status: Value) -> Value {
    obj["status"] = status;
    obj
}

#[derive(Clone, Debug)]
pub struct Case {
    version: Version,
    operation: &'static str,
    object: Option<Value>,
    old: Option<Value>,
    user: String,
    groups: Vec<String>,
    sub: Option<&'static str>,
    name: String,
    namespace: String,
    cfg: Config,
}

impl Case {
    pub fn create(version: Version, object: Value) -> Self {
        Case {
            version,
            operation: "CREATE",
            object: Some(object),
            old: None,
            user: "alice".into(),
            groups: vec!["system:authenticated".into()],
            sub: None,
            name: "s1".into(),
            namespace: "team-a".into(),
            cfg: config(),
        }
    }

    pub fn update(version: Version, old: Value, new: Value) -> Self {
        Case {
            operation: "UPDATE",
            old: Some(old),
            ..Case::create(version, new)
        }
    }

    pub fn delete(version: Version, old: Value) -> Self {
        Case {
            operation: "DELETE",
            object: None,
            old: Some(old),
            ..Case::create(version, Value::Null)
        }
    }

    pub fn status(mut self) -> Self {
        self.sub = Some("status");
        self
    }

    pub fn by(mut self, user: &str) -> Self {
        self.user = user.into();
        self
    }

    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self
    }

    pub fn named(mut self, namespace: &str, name: &str) -> Self {
        self.namespace = namespace.into();
        self.name = name.into();
        self
    }

    pub fn with_config(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }

    pub fn body(&self) -> String {
        let op = match self.operation {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            _ => Operation::Delete,
        };
        let body = RequestBuilder::new(op, self.version.as_str())
            .named(&self.namespace, &self.name)
            .user(&self.user, &self.groups)
            .object(self.object.clone())
            .old_object(self.old.clone())
            .sub_resource(self.sub)
            .to_vec();
        String::from_utf8(body).expect("JSON is UTF-8")
    }

    pub fn validate(&self) -> Verdict {
        let body = self.body();
        let review = review::decode(body.as_bytes()).unwrap_or_else(|e| panic!("decode: {e}"));
        let req = review.request();
        Policy::new(self.cfg.clone()).validate(req)
    }

    pub fn mutate(&self) -> Verdict {
        let body = self.body();
        let review = review::decode(body.as_bytes()).unwrap_or_else(|e| panic!("decode: {e}"));
        let req = review.request();
        Policy::new(self.cfg.clone()).mutate(req)
    }
}

/// `(field, cause reason)` of every cause of a denial.
pub fn causes(v: &Verdict) -> Vec<(String, &'static str)> {
    v.deny
        .as_ref()
        .map(|d| {
            d.details
                .causes
                .iter()
                .map(|c| (c.field.clone(), c.reason))
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
pub fn assert_allowed(v: &Verdict) {
    assert!(
        v.allowed(),
        "expected allowed, got {:?}",
        v.deny.as_ref().map(|d| &d.message)
    );
}

/// Denied with `code`, exactly these `(field, reason)` causes, and `rules`.
#[track_caller]
pub fn assert_denied(v: &Verdict, code: u16, want: &[(&str, &str)], rules: &[&str]) {
    let Some(deny) = &v.deny else {
        panic!("expected denial, got allowed (warnings {:?})", v.warnings)
    };
    assert_eq!(deny.code, code, "{}", deny.message);
    assert_eq!(
        deny.reason,
        if code == 403 { "Forbidden" } else { "Invalid" }
    );
    let got: Vec<(String, &str)> = causes(v);
    let want: Vec<(String, &str)> = want.iter().map(|(f, r)| ((*f).to_owned(), *r)).collect();
    assert_eq!(got, want, "{}", deny.message);
    let got_rules: Vec<&str> = v.denied_rules.iter().map(|r| r.as_str()).collect();
    assert_eq!(got_rules, rules, "{}", deny.message);
}

pub fn message(v: &Verdict) -> String {
    v.deny
        .as_ref()
        .map(|d| d.message.clone())
        .unwrap_or_default()
}
