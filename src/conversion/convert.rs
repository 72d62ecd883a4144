//! Typed v1alpha1 <-> v1alpha2 conversion of spec and status.
//!
//! v1alpha2 is the hub. Each direction reads the stash left by the other,
//! restores what the target can hold, and stashes what it cannot. For every
//! object in canonical form both round trips are identities (see the
//! property tests in `tests/conversion_props.rs`).

use crate::api::common::repo_name;
use crate::api::status::Phase;
use crate::api::{Version, v1alpha1 as v1, v1alpha2 as v2};

use super::any::AnySpec;
use super::stash::{RepoStash, SpecStash, StatusStash};

/// Why one object could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("spec.repos[{0}] has neither url nor input.url")]
    RepoWithoutUrl(usize),
    #[error("unsupported apiVersion {0:?}")]
    UnsupportedVersion(String),
    #[error("object is not a JSON object")]
    NotAnObject,
    #[error("{field}: {message}")]
    Decode { field: String, message: String },
    #[error("annotation vteam.ambient-code/conversion-data is not valid: {0}")]
    BadStash(String),
}

/// First index of a repo with this name.
fn index_of(repos: &[v2::Repo], name: &str) -> Option<usize> {
    repos.iter().position(|r| repo_name(&r.url) == name)
}

/// Normalize a source spec (any shape, labelled `from`) to the hub.
pub fn spec_to_hub(
    s: AnySpec,
    stash: &mut SpecStash,
    from: Version,
) -> Result<v2::SessionSpec, ConvertError> {
    let AnySpec {
        prompt,
        initial_prompt,
        repos,
        main_repo_index,
        main_repo,
        interactive,
        display_name,
        user_context,
        llm_settings,
        timeout,
        timeout_seconds,
        inactivity_timeout,
        inactivity_timeout_seconds,
        stop_on_run_finished,
        auto_push_on_complete,
        environment_variables,
        mcp_servers,
        active_workflow,
        bot_account,
        resource_overrides,
    } = s;
    if from == Version::V1Alpha1 {
        // A v1alpha1 source is the truth for its own fields: what it no
        // longer says must not come back from an old stash.
        stash.prompt = None;
        stash.main_repo_index = None;
        stash.repos.clear();
        stash.bot_account = None;
        stash.resource_overrides = None;
    }

    // `prompt` fills an empty initialPrompt; when both differ initialPrompt wins.
    let initial_prompt = match (initial_prompt, prompt) {
        (Some(ip), Some(p)) if !ip.is_empty() => {
            if p != ip {
                stash.prompt = Some(p);
            }
            Some(ip)
        }
        (_, Some(p)) => Some(p),
        (ip, None) => ip,
    };

    let repos = match repos {
        None => None,
        Some(repos) => {
            let mut out = Vec::with_capacity(repos.len());
            for (i, r) in repos.into_iter().enumerate() {
                out.push(repo_to_v2(i, r, stash)?);
            }
            Some(out)
        }
    };

    let all = repos.as_deref().unwrap_or_default();
    // An index survives as a stash entry whenever the name alone would not
    // bring it back (out of range, or not the first repo of that name).
    let keep_index = |i: i64, name: Option<&str>, stash: &mut SpecStash| {
        let by_index = usize::try_from(i).ok().and_then(|u| all.get(u));
        let first = by_index.and_then(|r| index_of(all, repo_name(&r.url)));
        let consistent = by_index.is_some_and(|r| Some(repo_name(&r.url)) == name)
            && first == usize::try_from(i).ok();
        if !consistent {
            stash.main_repo_index = Some(i);
        }
    };
    let main_repo = match (main_repo, main_repo_index) {
        (Some(name), index) => {
            if let Some(i) = index {
                keep_index(i, Some(&name), stash);
            }
            Some(name)
        }
        (None, Some(i)) => {
            let name = usize::try_from(i)
                .ok()
                .and_then(|u| all.get(u))
                .map(|r| repo_name(&r.url).to_owned());
            keep_index(i, name.as_deref(), stash);
            name
        }
        // A v1alpha2 mainRepo that had no index comes back.
        (None, None) => stash.main_repo.take(),
    };
    if main_repo.is_some() {
        stash.main_repo = None;
    }
    if bot_account.is_some() {
        stash.bot_account = bot_account;
    }
    if resource_overrides.is_some() {
        stash.resource_overrides = resource_overrides;
    }

    Ok(v2::SessionSpec {
        initial_prompt,
        repos,
        main_repo,
        interactive,
        display_name,
        user_context,
        llm_settings,
        timeout_seconds: prefer(timeout_seconds, timeout, "spec.timeout", stash),
        inactivity_timeout_seconds: prefer(
            inactivity_timeout_seconds,
            inactivity_timeout,
            "spec.inactivityTimeout",
            stash,
        ),
        stop_on_run_finished,
        auto_push_on_complete,
        environment_variables,
        mcp_servers,
        active_workflow,
    })
}

/// The v1alpha2 value, else the legacy one; a contradicting legacy value is kept.
fn prefer(
    current: Option<i64>,
    legacy: Option<i64>,
    field: &str,
    stash: &mut SpecStash,
) -> Option<i64> {
    match (current, legacy) {
        (Some(c), Some(l)) if c != l => {
            stash.conflicts.insert(field.to_owned(), l.into());
            Some(c)
        }
        (c, l) => c.or(l),
    }
}

fn repo_to_v2(i: usize, r: v1::Repo, stash: &mut SpecStash) -> Result<v2::Repo, ConvertError> {
    let v1::Repo {
        url,
        branch,
        auto_push,
        input,
        output,
    } = r;
    let (url, branch) = match (url, input) {
        (Some(url), None) => (url, branch),
        (Some(url), Some(input)) => {
            stash.repos.insert(
                i.to_string(),
                RepoStash {
                    url: url.clone(),
                    input: Some(input),
                    branch: None,
                },
            );
            (url, branch)
        }
        (None, Some(input)) => {
            let url = input.url.ok_or(ConvertError::RepoWithoutUrl(i))?;
            let chosen = match (input.branch, branch) {
                // The served schema defaults `branch` to main on legacy
                // items too: a default, not a value to keep beside input's.
                (Some(ib), Some(fb)) if fb == crate::api::common::DEFAULT_BRANCH => Some(ib),
                (Some(ib), Some(fb)) if ib != fb => {
                    stash.repos.insert(
                        i.to_string(),
                        RepoStash {
                            url: url.clone(),
                            input: None,
                            branch: Some(fb),
                        },
                    );
                    Some(ib)
                }
                (ib, fb) => ib.or(fb),
            };
            (url, chosen)
        }
        (None, None) => return Err(ConvertError::RepoWithoutUrl(i)),
    };
    Ok(v2::Repo {
        url,
        branch,
        auto_push,
        output,
    })
}

pub fn spec_from_hub(s: v2::SessionSpec, stash: &mut SpecStash) -> v1::SessionSpec {
    let v2::SessionSpec {
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
    } = s;
    stash.main_repo = None;

    let main_repo_index = match main_repo {
        Some(name) => {
            let all = repos.as_deref().unwrap_or_default();
            let stashed = stash.main_repo_index.take().filter(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|u| all.get(u))
                    .is_some_and(|r| repo_name(&r.url) == name)
            });
            match stashed.or_else(|| index_of(all, &name).and_then(|i| i64::try_from(i).ok())) {
                Some(i) => Some(i),
                None => {
                    stash.main_repo = Some(name);
                    None
                }
            }
        }
        None => stash.main_repo_index.take(),
    };

    let repos = repos.map(|repos| {
        repos
            .into_iter()
            .enumerate()
            .map(|(i, r)| repo_to_v1(i, r, stash))
            .collect()
    });
    // Entries whose repo changed since they were stashed are stale.
    stash.repos.clear();

    v1::SessionSpec {
        prompt: stash.prompt.take(),
        initial_prompt,
        repos,
        main_repo_index,
        interactive,
        display_name,
        user_context,
        llm_settings,
        timeout: timeout_seconds,
        inactivity_timeout: inactivity_timeout_seconds,
        stop_on_run_finished,
        auto_push_on_complete,
        environment_variables,
        mcp_servers,
        active_workflow,
        bot_account: stash.bot_account.take(),
        resource_overrides: stash.resource_overrides.take(),
    }
}

fn repo_to_v1(i: usize, r: v2::Repo, stash: &mut SpecStash) -> v1::Repo {
    let v2::Repo {
        url,
        branch,
        auto_push,
        output,
    } = r;
    let key = i.to_string();
    let kept = stash
        .repos
        .get(&key)
        .is_some_and(|k| k.url == url)
        .then(|| stash.repos.remove(&key))
        .flatten();
    match kept {
        // The legacy shape it came from: `{input, output}` with a conflicting flat branch.
        Some(RepoStash {
            input: None,
            branch: Some(flat_branch),
            ..
        }) => v1::Repo {
            url: None,
            branch: Some(flat_branch),
            auto_push,
            input: Some(crate::api::common::GitRef {
                url: Some(url),
                branch,
            }),
            output,
        },
        Some(RepoStash { input, .. }) => v1::Repo {
            url: Some(url),
            branch,
            auto_push,
            input,
            output,
        },
        None => v1::Repo {
            url: Some(url),
            branch,
            auto_push,
            input: None,
            output,
        },
    }
}

/// Normalize a source status (v1alpha1's is the union) to the hub.
pub fn status_to_hub(
    s: v1::SessionStatus,
    stash: &mut StatusStash,
    from: Version,
) -> v2::SessionStatus {
    let v1::SessionStatus {
        phase,
        observed_generation,
        start_time,
        completion_time,
        reconciled_repos,
        reconciled_workflow,
        last_activity_time,
        stopped_reason,
        sdk_session_id,
        sdk_restart_count,
        attempt,
        restarts,
        conditions,
        message,
        is_error,
        job_name,
        state_dir,
        subtype,
        num_turns,
        session_id,
        total_cost_usd,
        usage,
        result,
        has_workspace_changes,
        repos,
    } = s;
    let native = from == Version::V1Alpha1;
    let phase = match phase {
        Some(Phase::Error) => {
            stash.phase = Some(Phase::Error);
            Some(Phase::Failed)
        }
        other => {
            if native {
                stash.phase = None;
            }
            other
        }
    };
    // Native legacy fields replace the stash; stray ones in a mislabelled
    // v1alpha2 object are added to it.
    macro_rules! keep {
        ($($f:ident),*) => { $( if native || $f.is_some() { stash.$f = $f; } )* };
    }
    keep!(
        message,
        is_error,
        job_name,
        state_dir,
        subtype,
        num_turns,
        session_id,
        total_cost_usd,
        usage,
        result,
        has_workspace_changes,
        repos
    );
    v2::SessionStatus {
        phase,
        observed_generation,
        start_time,
        completion_time,
        reconciled_repos,
        reconciled_workflow,
        last_activity_time,
        stopped_reason,
        sdk_session_id,
        sdk_restart_count,
        attempt,
        restarts,
        conditions,
    }
}

pub fn status_from_hub(s: v2::SessionStatus, stash: &mut StatusStash) -> v1::SessionStatus {
    let v2::SessionStatus {
        phase,
        observed_generation,
        start_time,
        completion_time,
        reconciled_repos,
        reconciled_workflow,
        last_activity_time,
        stopped_reason,
        sdk_session_id,
        sdk_restart_count,
        attempt,
        restarts,
        conditions,
    } = s;
    // `Error` comes back only while the session is still `Failed`.
    let stashed_phase = stash.phase.take();
    let phase = match (phase, stashed_phase) {
        (Some(Phase::Failed), Some(Phase::Error)) => Some(Phase::Error),
        (p, _) => p,
    };
    let taken = std::mem::take(stash);
    v1::SessionStatus {
        phase,
        observed_generation,
        start_time,
        completion_time,
        reconciled_repos,
        reconciled_workflow,
        last_activity_time,
        stopped_reason,
        sdk_session_id,
        sdk_restart_count,
        attempt,
        restarts,
        conditions,
        message: taken.message,
        is_error: taken.is_error,
        job_name: taken.job_name,
        state_dir: taken.state_dir,
        subtype: taken.subtype,
        num_turns: taken.num_turns,
        session_id: taken.session_id,
        total_cost_usd: taken.total_cost_usd,
        usage: taken.usage,
        result: taken.result,
        has_workspace_changes: taken.has_workspace_changes,
        repos: taken.repos,
    }
}
