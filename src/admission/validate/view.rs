//! A version-neutral view of a decoded session. Rules are written once
//! against it; every field carries its name in the request's version, so
//! errors say `spec.timeout` to a v1alpha1 client and `spec.timeoutSeconds`
//! to a v1alpha2 one.

use std::collections::BTreeMap;

use crate::api::common::{ActiveWorkflow, GitRef, LlmSettings, McpServers, UserContext};
use crate::api::decode::decode_typed;
use crate::api::field::{BadValue, FieldError, FieldPath, Rule};
use crate::api::status::{Condition, Phase};
use crate::api::{Meta, Session, SessionV1, SessionV2, Version, v1alpha1, v1alpha2};
use crate::conversion::stash::Stash;

/// A value together with its field name in the request's version.
pub type Named<'a, T> = (&'static str, T);

pub struct RepoView<'a> {
    /// `url`, or `input.url` for the legacy form.
    pub url: Option<Named<'a, &'a str>>,
    pub branch: Option<Named<'a, &'a str>>,
    pub output: Option<&'a GitRef>,
    /// v1alpha1 repo with both `url` and `input`: neither form.
    pub both_forms: bool,
}

pub enum MainRepo<'a> {
    Unset,
    Index(i64),
    Name(&'a str),
}

pub struct SpecView<'a> {
    /// `initialPrompt`, then legacy `prompt`.
    pub prompts: Vec<Named<'a, &'a str>>,
    pub repos: Vec<RepoView<'a>>,
    pub main_repo: MainRepo<'a>,
    pub timeout: Option<Named<'a, i64>>,
    pub inactivity_timeout: Option<Named<'a, i64>>,
    pub llm: Option<&'a LlmSettings>,
    pub env: Option<&'a BTreeMap<String, String>>,
    pub mcp: Option<&'a McpServers>,
    pub workflow: Option<&'a ActiveWorkflow>,
    /// Removed fields present in the object (V12).
    pub deprecated: Vec<&'static str>,
}

pub struct StatusView<'a> {
    pub phase: Option<&'a Phase>,
    /// Restarts after RetriesExhausted (V26).
    pub restarts: Option<i64>,
    pub observed_generation: Option<i64>,
    pub conditions: &'a [Condition],
}

/// What the rules need from a session of either version.
pub trait Versioned: Sized {
    /// Decode an object; errors are rooted at `root` ("" or "oldObject").
    fn decode(json: &str, root: &str) -> Result<Self, FieldError>;

    fn meta(&self) -> &Meta;
    fn spec_view(&self) -> SpecView<'_>;
    fn status_view(&self) -> StatusView<'_>;
    fn user_context(&self) -> Option<&UserContext>;
    fn is_interactive(&self) -> bool;
    /// Top-level spec fields whose value differs between `old` and `self`.
    fn changed_spec_fields(&self, old: &Self) -> Vec<&'static str>;
    /// The statuses differ at most in `lastActivityTime`.
    fn status_eq_but_activity(&self, old: &Self) -> bool;
}

/// Both versions' statuses compared without `lastActivityTime`.
macro_rules! status_eq_but_activity {
    () => {
        fn status_eq_but_activity(&self, old: &Self) -> bool {
            let strip = |s: &Self| {
                let mut st = s.status.clone().unwrap_or_default();
                st.last_activity_time = None;
                st
            };
            strip(self) == strip(old)
        }
    };
}

fn changed<T: PartialEq>(out: &mut Vec<&'static str>, name: &'static str, old: &T, new: &T) {
    if old != new {
        out.push(name);
    }
}

impl Versioned for SessionV2 {
    /// Objects stored under this label may still hold legacy shapes (see
    /// `conversion::any`); read them as conversion does, so a label or
    /// status update of an old object is judged on what it means.
    fn decode(json: &str, root: &str) -> Result<Self, FieldError> {
        use crate::conversion::any::AnySpec;
        use crate::conversion::convert::{ConvertError, spec_to_hub, status_to_hub};
        let raw: Session<AnySpec, v1alpha1::SessionStatus> =
            decode_typed(json).map_err(|e| e.into_field_error(root))?;
        let mut stash = Stash::default();
        let spec = match raw.spec {
            Some(s) => Some(
                spec_to_hub(s, &mut stash.spec, Version::V1Alpha2).map_err(|e| match e {
                    ConvertError::RepoWithoutUrl(i) => FieldError::required(
                        Rule::Schema,
                        FieldPath::new(root)
                            .child("spec")
                            .child("repos")
                            .index(i)
                            .child("url"),
                        "",
                    ),
                    other => FieldError::invalid(
                        Rule::Schema,
                        FieldPath::new(root).child("spec"),
                        BadValue::str("object"),
                        other.to_string(),
                    ),
                })?,
            ),
            None => None,
        };
        Ok(Session {
            api_version: raw.api_version,
            kind: raw.kind,
            metadata: raw.metadata,
            spec,
            status: raw
                .status
                .map(|s| status_to_hub(s, &mut stash.status, Version::V1Alpha2)),
        })
    }

    fn meta(&self) -> &Meta {
        &self.metadata
    }

    fn spec_view(&self) -> SpecView<'_> {
        let Some(spec) = &self.spec else {
            return SpecView::empty();
        };
        SpecView {
            prompts: spec
                .initial_prompt
                .as_deref()
                .map(|p| ("initialPrompt", p))
                .into_iter()
                .collect(),
            repos: spec
                .repos()
                .iter()
                .map(|r| RepoView {
                    url: Some(("url", r.url.as_str())),
                    branch: r.branch.as_deref().map(|b| ("branch", b)),
                    output: r.output.as_ref(),
                    both_forms: false,
                })
                .collect(),
            main_repo: match spec.main_repo.as_deref() {
                Some(name) => MainRepo::Name(name),
                None => MainRepo::Unset,
            },
            timeout: spec.timeout_seconds.map(|t| ("timeoutSeconds", t)),
            inactivity_timeout: spec
                .inactivity_timeout_seconds
                .map(|t| ("inactivityTimeoutSeconds", t)),
            llm: spec.llm_settings.as_ref(),
            env: spec.environment_variables.as_ref(),
            mcp: spec.mcp_servers.as_ref(),
            workflow: spec.active_workflow.as_ref(),
            deprecated: Vec::new(),
        }
    }

    fn status_view(&self) -> StatusView<'_> {
        match &self.status {
            Some(s) => StatusView {
                phase: s.phase.as_ref(),
                restarts: s.restarts,
                observed_generation: s.observed_generation,
                conditions: s.conditions(),
            },
            None => StatusView::empty(),
        }
    }

    fn user_context(&self) -> Option<&UserContext> {
        self.spec.as_ref().and_then(|s| s.user_context.as_ref())
    }

    fn is_interactive(&self) -> bool {
        self.spec.as_ref().is_none_or(|s| s.is_interactive())
    }

    status_eq_but_activity!();

    fn changed_spec_fields(&self, old: &Self) -> Vec<&'static str> {
        let empty = v1alpha2::SessionSpec::default();
        let new = self.spec.as_ref().unwrap_or(&empty);
        let old = old.spec.as_ref().unwrap_or(&empty);
        // Exhaustive destructuring: a new spec field will not compile until
        // it is listed here, so nothing becomes mutable by accident.
        let v1alpha2::SessionSpec {
            initial_prompt,
            repos,
            main_repo,
            interactive,
            display_name,
            user_context,
            llm_settings,
            timeout_seconds,
            inactivity_timeout_seconds,
            stop_on_run_finished,
            auto_push_on_complete,
            environment_variables,
            mcp_servers,
            active_workflow,
        } = new;
        let mut out = Vec::new();
        let o = &mut out;
        changed(o, "initialPrompt", &old.initial_prompt, initial_prompt);
        changed(o, "repos", &old.repos, repos);
        changed(o, "mainRepo", &old.main_repo, main_repo);
        changed(o, "interactive", &old.interactive, interactive);
        changed(o, "displayName", &old.display_name, display_name);
        changed(o, "userContext", &old.user_context, user_context);
        changed(o, "llmSettings", &old.llm_settings, llm_settings);
        changed(o, "timeoutSeconds", &old.timeout_seconds, timeout_seconds);
        changed(
            o,
            "inactivityTimeoutSeconds",
            &old.inactivity_timeout_seconds,
            inactivity_timeout_seconds,
        );
        changed(
            o,
            "stopOnRunFinished",
            &old.stop_on_run_finished,
            stop_on_run_finished,
        );
        changed(
            o,
            "autoPushOnComplete",
            &old.auto_push_on_complete,
            auto_push_on_complete,
        );
        changed(
            o,
            "environmentVariables",
            &old.environment_variables,
            environment_variables,
        );
        changed(o, "mcpServers", &old.mcp_servers, mcp_servers);
        changed(o, "activeWorkflow", &old.active_workflow, active_workflow);
        out
    }
}

impl Versioned for SessionV1 {
    /// v1alpha1 is already the union of every shape.
    fn decode(json: &str, root: &str) -> Result<Self, FieldError> {
        decode_typed(json).map_err(|e| e.into_field_error(root))
    }

    fn meta(&self) -> &Meta {
        &self.metadata
    }

    fn spec_view(&self) -> SpecView<'_> {
        let Some(spec) = &self.spec else {
            return SpecView::empty();
        };
        let mut prompts = Vec::new();
        if let Some(p) = spec.initial_prompt.as_deref() {
            prompts.push(("initialPrompt", p));
        }
        if let Some(p) = spec.prompt.as_deref() {
            prompts.push(("prompt", p));
        }
        let mut deprecated = Vec::new();
        if spec.bot_account.is_some() {
            deprecated.push("botAccount");
        }
        if spec.resource_overrides.is_some() {
            deprecated.push("resourceOverrides");
        }
        SpecView {
            prompts,
            repos: spec.repos().iter().map(repo_view_v1).collect(),
            main_repo: match spec.main_repo_index {
                Some(i) => MainRepo::Index(i),
                None => MainRepo::Unset,
            },
            timeout: spec.timeout.map(|t| ("timeout", t)),
            inactivity_timeout: spec.inactivity_timeout.map(|t| ("inactivityTimeout", t)),
            llm: spec.llm_settings.as_ref(),
            env: spec.environment_variables.as_ref(),
            mcp: spec.mcp_servers.as_ref(),
            workflow: spec.active_workflow.as_ref(),
            deprecated,
        }
    }

    fn status_view(&self) -> StatusView<'_> {
        match &self.status {
            Some(s) => StatusView {
                phase: s.phase.as_ref(),
                restarts: s.restarts,
                observed_generation: s.observed_generation,
                conditions: s.conditions(),
            },
            None => StatusView::empty(),
        }
    }

    fn user_context(&self) -> Option<&UserContext> {
        self.spec.as_ref().and_then(|s| s.user_context.as_ref())
    }

    fn is_interactive(&self) -> bool {
        self.spec.as_ref().is_none_or(|s| s.is_interactive())
    }

    status_eq_but_activity!();

    fn changed_spec_fields(&self, old: &Self) -> Vec<&'static str> {
        let empty = v1alpha1::SessionSpec::default();
        let new = self.spec.as_ref().unwrap_or(&empty);
        let old = old.spec.as_ref().unwrap_or(&empty);
        let v1alpha1::SessionSpec {
            prompt,
            initial_prompt,
            repos,
            main_repo_index,
            interactive,
            display_name,
            user_context,
            llm_settings,
            timeout,
            inactivity_timeout,
            stop_on_run_finished,
            auto_push_on_complete,
            environment_variables,
            mcp_servers,
            active_workflow,
            bot_account,
            resource_overrides,
        } = new;
        let mut out = Vec::new();
        let o = &mut out;
        changed(o, "prompt", &old.prompt, prompt);
        changed(o, "initialPrompt", &old.initial_prompt, initial_prompt);
        changed(o, "repos", &old.repos, repos);
        changed(o, "mainRepoIndex", &old.main_repo_index, main_repo_index);
        changed(o, "interactive", &old.interactive, interactive);
        changed(o, "displayName", &old.display_name, display_name);
        changed(o, "userContext", &old.user_context, user_context);
        changed(o, "llmSettings", &old.llm_settings, llm_settings);
        changed(o, "timeout", &old.timeout, timeout);
        changed(
            o,
            "inactivityTimeout",
            &old.inactivity_timeout,
            inactivity_timeout,
        );
        changed(
            o,
            "stopOnRunFinished",
            &old.stop_on_run_finished,
            stop_on_run_finished,
        );
        changed(
            o,
            "autoPushOnComplete",
            &old.auto_push_on_complete,
            auto_push_on_complete,
        );
        changed(
            o,
            "environmentVariables",
            &old.environment_variables,
            environment_variables,
        );
        changed(o, "mcpServers", &old.mcp_servers, mcp_servers);
        changed(o, "activeWorkflow", &old.active_workflow, active_workflow);
        changed(o, "botAccount", &old.bot_account, bot_account);
        changed(
            o,
            "resourceOverrides",
            &old.resource_overrides,
            resource_overrides,
        );
        out
    }
}

fn repo_view_v1(r: &v1alpha1::Repo) -> RepoView<'_> {
    let input = r.input.as_ref();
    let (url, branch) = match (&r.url, input) {
        (Some(u), _) => (
            Some(("url", u.as_str())),
            r.branch.as_deref().map(|b| ("branch", b)),
        ),
        (None, Some(i)) => (
            i.url.as_deref().map(|u| ("input.url", u)),
            i.branch
                .as_deref()
                .map(|b| ("input.branch", b))
                .or(r.branch.as_deref().map(|b| ("branch", b))),
        ),
        (None, None) => (None, r.branch.as_deref().map(|b| ("branch", b))),
    };
    RepoView {
        url,
        branch,
        output: r.output.as_ref(),
        both_forms: r.url.is_some() && input.is_some(),
    }
}

impl SpecView<'_> {
    fn empty() -> Self {
        SpecView {
            prompts: Vec::new(),
            repos: Vec::new(),
            main_repo: MainRepo::Unset,
            timeout: None,
            inactivity_timeout: None,
            llm: None,
            env: None,
            mcp: None,
            workflow: None,
            deprecated: Vec::new(),
        }
    }
}

impl StatusView<'_> {
    fn empty() -> Self {
        StatusView {
            phase: None,
            restarts: None,
            observed_generation: None,
            conditions: &[],
        }
    }
}
