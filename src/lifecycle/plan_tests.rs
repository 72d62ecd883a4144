//! Planner scenarios (phase × event), named after what they prove.

use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::api::status::{ConditionStatus as CS, find_condition};

const T0: &str = "2026-11-23T06:00:00Z";

fn now() -> Timestamp {
    T0.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn at(secs: i64) -> Timestamp {
    now()
        .saturating_add(SignedDuration::from_secs(secs))
        .unwrap_or(now())
}

fn repo(url: &str) -> Repo {
    Repo {
        url: url.into(),
        branch: Some("main".into()),
        auto_push: None,
        output: None,
    }
}

fn spec() -> SessionSpec {
    SessionSpec {
        initial_prompt: Some("go".into()),
        repos: Some(vec![repo("https://github.com/acme/api.git")]),
        main_repo: Some("api".into()),
        interactive: Some(true),
        active_workflow: Some(ActiveWorkflow {
            git_url: Some("https://github.com/acme/wf.git".into()),
            branch: Some("main".into()),
            path: Some("flows/bugfix".into()),
        }),
        ..SessionSpec::default()
    }
}

fn status(phase: Phase, attempt: i64) -> SessionStatus {
    SessionStatus {
        phase: Some(phase),
        attempt: Some(attempt),
        ..SessionStatus::default()
    }
}

/// The uid of attempt `attempt`'s runner pod in these scenarios.
fn runner_uid(attempt: i64) -> String {
    format!("uid-runner-{attempt}")
}

fn pod(attempt: i64, runner: RunnerState, phase: PodPhase) -> PodView {
    PodView {
        name: pod_name("s1", attempt),
        uid: runner_uid(attempt),
        ip: Some("10.244.0.9".into()),
        phase,
        reason: None,
        deleting: false,
        runner,
        repos: spec().repos.unwrap_or_default(),
    }
}

fn world(pod: Option<PodView>) -> Observed {
    Observed {
        pod,
        service: true,
        ..Observed::default()
    }
}

fn run_at(
    spec: &SessionSpec,
    st: Option<&SessionStatus>,
    desired: Option<Desired>,
    obs: &Observed,
    t: Timestamp,
) -> Plan {
    let view = SessionView {
        name: "s1",
        generation: 3,
        desired,
        spec,
        status: st,
    };
    plan(&view, obs, t, &PlanConfig::default())
}

fn run(st: Option<&SessionStatus>, obs: &Observed) -> Plan {
    run_at(&spec(), st, None, obs, now())
}

fn cond<'a>(p: &'a Plan, t: &str) -> Option<&'a Condition> {
    find_condition(p.status.conditions(), t)
}

fn cond_is(p: &Plan, t: &str, status: CS, reason: &str) -> bool {
    cond(p, t).is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason))
}

/// A status as the planner leaves it once the runner is up and reconciled.
fn running_reconciled() -> SessionStatus {
    let first = run(
        Some(&status(Phase::Creating, 1)),
        &world(Some(pod(
            1,
            RunnerState::Running { ready: true },
            PodPhase::Running,
        ))),
    );
    let mut st = first.status;
    st.reconciled_workflow = desired_workflow(&spec());
    let second = run(
        Some(&st),
        &world(Some(pod(
            1,
            RunnerState::Running { ready: true },
            PodPhase::Running,
        ))),
    );
    second.status
}

#[test]
fn a_new_session_becomes_pending_at_attempt_1() {
    let p = run(None, &world(None));
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(p.status.attempt, Some(1));
    assert!(p.actions.is_empty());
    assert_eq!(p.requeue, Some(Duration::ZERO));
}

#[test]
fn pending_creates_the_service_and_pod_and_becomes_creating() {
    let p = run(Some(&status(Phase::Pending, 1)), &Observed::default());
    assert_eq!(
        p.actions,
        vec![
            Action::CreateService,
            Action::CreatePod {
                name: "s1-runner-1".into(),
                attempt: 1
            }
        ]
    );
    assert_eq!(p.status.phase, Some(Phase::Creating));
    assert!(cond_is(&p, POD_CREATED, CS::True, "Created"));
}

#[test]
fn a_starting_pod_is_waited_for_by_its_events_not_by_a_timer() {
    // A recheck timer per starting session costs a burst of N sessions,
    // queued behind the request rate, O(N^2) reconciles (reconcile_load).
    let created = run(Some(&status(Phase::Pending, 1)), &Observed::default());
    assert_eq!(created.status.phase, Some(Phase::Creating));
    assert_eq!(created.requeue, None);
    for runner in [
        RunnerState::Unknown,
        RunnerState::Waiting {
            reason: "ContainerCreating".into(),
        },
        RunnerState::Running { ready: false },
    ] {
        let p = run(
            Some(&status(Phase::Creating, 1)),
            &world(Some(pod(1, runner.clone(), PodPhase::Pending))),
        );
        assert_eq!(p.status.phase, Some(Phase::Creating), "{runner:?}");
        assert_eq!(p.requeue, None, "{runner:?}");
    }
}

#[test]
fn a_pod_that_already_exists_is_not_created_twice() {
    // The status write after creating it was lost: adopt, do not duplicate.
    let p = run(
        Some(&status(Phase::Pending, 2)),
        &world(Some(pod(2, RunnerState::Unknown, PodPhase::Pending))),
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.status.phase, Some(Phase::Creating));
}

#[test]
fn creating_becomes_running_once_the_runner_container_is_ready() {
    let st = status(Phase::Creating, 1);
    let waiting = run(
        Some(&st),
        &world(Some(pod(
            1,
            RunnerState::Running { ready: false },
            PodPhase::Running,
        ))),
    );
    assert_eq!(waiting.status.phase, Some(Phase::Creating));
    let p = run(
        Some(&st),
        &world(Some(pod(
            1,
            RunnerState::Running { ready: true },
            PodPhase::Running,
        ))),
    );
    assert_eq!(p.status.phase, Some(Phase::Running));
    assert_eq!(p.status.start_time.as_deref(), Some(T0));
    assert!(cond_is(&p, RUNNER_STARTED, CS::True, "RunnerStarted"));
    assert_eq!(p.status.reconciled_repos, Some(desired_repos(&spec())));
}

#[test]
fn workflow_is_not_announced_before_the_runner_started() {
    // Story 1: the old operator told a pod that did not exist yet.
    for obs in [
        world(None),
        world(Some(pod(1, RunnerState::Unknown, PodPhase::Pending))),
        world(Some(pod(
            1,
            RunnerState::Running { ready: false },
            PodPhase::Running,
        ))),
    ] {
        for phase in [Phase::Pending, Phase::Creating] {
            let p = run(Some(&status(phase.clone(), 1)), &obs);
            assert!(
                !p.actions
                    .iter()
                    .any(|a| matches!(a, Action::NotifyWorkflow(_))),
                "{phase:?}: {:?}",
                p.actions
            );
        }
    }
}

#[test]
fn the_workflow_is_announced_once_the_runner_started() {
    let first = run(
        Some(&status(Phase::Creating, 1)),
        &world(Some(pod(
            1,
            RunnerState::Running { ready: true },
            PodPhase::Running,
        ))),
    );
    let p = run(
        Some(&first.status),
        &world(Some(pod(
            1,
            RunnerState::Running { ready: true },
            PodPhase::Running,
        ))),
    );
    assert_eq!(
        p.actions,
        vec![Action::NotifyWorkflow(desired_workflow(&spec()))]
    );
    assert!(cond_is(&p, WORKFLOW_RECONCILED, CS::False, "Applying"));
    assert_ne!(
        p.status.observed_generation,
        Some(3),
        "not observed until applied"
    );
}

#[test]
fn a_failed_workflow_notice_is_recorded_and_retried_with_backoff() {
    let first = run(
        Some(&status(Phase::Creating, 1)),
        &world(Some(pod(
            1,
            RunnerState::Running { ready: true },
            PodPhase::Running,
        ))),
    );
    let mut obs = world(Some(pod(
        1,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    obs.workflow_notice = Some(Notice {
        fresh: true,
        runner: runner_uid(1),
        target: desired_workflow(&spec()),
        ok: false,
        message: "dial tcp: lookup session-s1.team-a.svc: no such host".into(),
        at: now(),
        failures: 3,
    });
    let p = run_at(&spec(), Some(&first.status), None, &obs, at(1));
    assert!(cond_is(&p, WORKFLOW_RECONCILED, CS::False, "UpdateFailed"));
    assert!(
        cond(&p, WORKFLOW_RECONCILED)
            .and_then(|c| c.message.as_deref())
            .is_some_and(|m| m.contains("no such host"))
    );
    assert!(p.actions.is_empty(), "inside the backoff: {:?}", p.actions);
    assert_eq!(
        p.requeue,
        Some(Duration::from_secs(3)),
        "4 s backoff after 3 failures, 1 s elapsed"
    );
    assert_ne!(p.status.observed_generation, Some(3));
    assert!(cond_is(&p, READY, CS::False, "Reconciling"));
    let later = run_at(&spec(), Some(&first.status), None, &obs, at(4));
    assert_eq!(
        later.actions,
        vec![Action::NotifyWorkflow(desired_workflow(&spec()))]
    );
}

#[test]
fn observed_generation_advances_only_when_repos_and_workflow_are_reconciled() {
    let first = run(
        Some(&status(Phase::Creating, 1)),
        &world(Some(pod(
            1,
            RunnerState::Running { ready: true },
            PodPhase::Running,
        ))),
    );
    let mut obs = world(Some(pod(
        1,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    obs.workflow_notice = Some(Notice {
        fresh: true,
        runner: runner_uid(1),
        target: desired_workflow(&spec()),
        ok: true,
        message: String::new(),
        at: now(),
        failures: 0,
    });
    let p = run(Some(&first.status), &obs);
    assert_eq!(p.status.reconciled_workflow, desired_workflow(&spec()));
    assert_eq!(p.status.observed_generation, Some(3));
    assert!(cond_is(&p, READY, CS::True, "Running"));
    assert!(cond(&p, READY).is_some_and(|c| c.observed_generation == Some(3)));
}

#[test]
fn a_spec_change_while_running_is_reapplied() {
    let st = running_reconciled();
    let mut changed = spec();
    changed.repos = Some(vec![
        repo("https://github.com/acme/api.git"),
        repo("https://github.com/acme/docs.git"),
    ]);
    changed.active_workflow = Some(ActiveWorkflow {
        git_url: Some("https://github.com/acme/wf.git".into()),
        branch: Some("v2".into()),
        path: None,
    });
    let obs = world(Some(pod(
        1,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    let p = run_at(&changed, Some(&st), None, &obs, now());
    assert_eq!(
        p.actions,
        vec![
            Action::NotifyRepos(desired_repos(&changed)),
            Action::NotifyWorkflow(desired_workflow(&changed))
        ]
    );
    assert!(cond_is(&p, READY, CS::False, "Reconciling"));
}

#[test]
fn runner_oom_while_sidecar_alive_is_a_failed_attempt() {
    // Story 2: the pod is still Running because a sidecar lives on.
    let st = running_reconciled();
    let oom = pod(
        1,
        RunnerState::Terminated {
            exit_code: 137,
            reason: "OOMKilled".into(),
        },
        PodPhase::Running,
    );
    let p = run(Some(&st), &world(Some(oom)));
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(
        p.status.attempt,
        Some(2),
        "Running -> Pending only with a higher attempt"
    );
    assert_eq!(
        p.actions,
        vec![Action::DeletePod {
            name: "s1-runner-1".into()
        }]
    );
    assert!(cond_is(&p, RUNNER_STARTED, CS::False, "OOMKilled"));
    // A runner started before: the next one resumes (IS_RESUME reads it).
    assert_eq!(p.status.start_time, st.start_time);
    assert!(p.status.start_time.is_some());
    // The next round builds attempt 2's pod from the current spec.
    let next = run(Some(&p.status), &world(None));
    assert_eq!(
        next.actions,
        vec![Action::CreatePod {
            name: "s1-runner-2".into(),
            attempt: 2
        }]
    );
}

#[test]
fn a_non_zero_exit_evicted_or_deleted_pod_is_a_failed_attempt() {
    let st = running_reconciled();
    let mut evicted = pod(1, RunnerState::Running { ready: true }, PodPhase::Failed);
    evicted.reason = Some("Evicted".into());
    let mut deleting = pod(1, RunnerState::Running { ready: true }, PodPhase::Running);
    deleting.deleting = true;
    for (obs, reason) in [
        (
            world(Some(pod(
                1,
                RunnerState::Terminated {
                    exit_code: 1,
                    reason: "Error".into(),
                },
                PodPhase::Failed,
            ))),
            "RunnerFailed",
        ),
        (world(Some(evicted)), "Evicted"),
        (world(None), "PodDeleted"),
        (world(Some(deleting)), "PodDeleted"),
    ] {
        let p = run(Some(&st), &obs);
        assert_eq!(p.status.phase, Some(Phase::Pending), "{reason}");
        assert_eq!(p.status.attempt, Some(2));
        assert!(
            cond_is(&p, RUNNER_STARTED, CS::False, reason),
            "{reason}: {:?}",
            p.status.conditions
        );
    }
}

#[test]
fn creating_image_pull_failure_is_a_failed_attempt() {
    let p = run(
        Some(&status(Phase::Creating, 1)),
        &world(Some(pod(
            1,
            RunnerState::Waiting {
                reason: "ImagePullBackOff".into(),
            },
            PodPhase::Pending,
        ))),
    );
    assert_eq!(
        (p.status.phase, p.status.attempt),
        (Some(Phase::Pending), Some(2))
    );
    // No runner ever started: the next one runs the prompt, no resume.
    assert_eq!(p.status.start_time, None);
    let creating = run(
        Some(&status(Phase::Creating, 1)),
        &world(Some(pod(
            1,
            RunnerState::Waiting {
                reason: "ContainerCreating".into(),
            },
            PodPhase::Pending,
        ))),
    );
    assert_eq!(
        creating.status.phase,
        Some(Phase::Creating),
        "still starting"
    );
}

#[test]
fn the_last_allowed_attempt_fails_with_retries_exhausted_and_nothing_is_recreated() {
    // Story 3: bounded retry.
    let mut st = running_reconciled();
    st.attempt = Some(3);
    let p = run(
        Some(&st),
        &world(Some(pod(
            3,
            RunnerState::Terminated {
                exit_code: 2,
                reason: "Error".into(),
            },
            PodPhase::Failed,
        ))),
    );
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.status.attempt, Some(3));
    assert!(cond_is(&p, RETRIES_EXHAUSTED, CS::True, "RunnerFailed"));
    assert_eq!(
        p.actions,
        vec![Action::DeletePod {
            name: "s1-runner-3".into()
        }]
    );
    let after = run(Some(&p.status), &world(None));
    assert!(after.actions.is_empty());
    assert!(!after.status_changed);
}

#[test]
fn exit_0_completes_the_session_and_frees_the_pod() {
    let st = running_reconciled();
    let p = run(
        Some(&st),
        &world(Some(pod(
            1,
            RunnerState::Terminated {
                exit_code: 0,
                reason: "Completed".into(),
            },
            PodPhase::Running,
        ))),
    );
    assert_eq!(p.status.phase, Some(Phase::Completed));
    assert_eq!(p.status.completion_time.as_deref(), Some(T0));
    assert_eq!(
        p.actions,
        vec![Action::DeletePod {
            name: "s1-runner-1".into()
        }]
    );
}

#[test]
fn a_runner_that_finished_before_we_saw_it_run_passes_through_running() {
    let p = run(
        Some(&status(Phase::Creating, 1)),
        &world(Some(pod(
            1,
            RunnerState::Terminated {
                exit_code: 0,
                reason: "Completed".into(),
            },
            PodPhase::Succeeded,
        ))),
    );
    assert_eq!(
        p.status.phase,
        Some(Phase::Running),
        "Creating -> Completed is not a legal transition"
    );
    let done = run(
        Some(&p.status),
        &world(Some(pod(
            1,
            RunnerState::Terminated {
                exit_code: 0,
                reason: "Completed".into(),
            },
            PodPhase::Succeeded,
        ))),
    );
    assert_eq!(done.status.phase, Some(Phase::Completed));
}

#[test]
fn desired_stopped_stops_the_session_and_clears_the_annotation() {
    let st = running_reconciled();
    let obs = world(Some(pod(
        1,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    let p = run_at(&spec(), Some(&st), Some(Desired::Stopped), &obs, now());
    assert_eq!(p.status.phase, Some(Phase::Stopping));
    assert_eq!(p.status.stopped_reason, Some(StoppedReason::User));
    assert_eq!(
        p.actions,
        vec![
            Action::ClearDesiredPhase,
            Action::DeletePod {
                name: "s1-runner-1".into()
            }
        ]
    );
    let mut gone = obs.clone();
    if let Some(p) = gone.pod.as_mut() {
        p.deleting = true;
    }
    let waiting = run(Some(&p.status), &gone);
    assert_eq!(waiting.status.phase, Some(Phase::Stopping));
    assert!(waiting.actions.is_empty());
    let stopped = run(Some(&p.status), &world(None));
    assert_eq!(stopped.status.phase, Some(Phase::Stopped));
    assert_eq!(stopped.status.stopped_reason, Some(StoppedReason::User));
}

#[test]
fn desired_stopped_from_pending_or_creating_stops_too() {
    for phase in [Phase::Pending, Phase::Creating] {
        let p = run_at(
            &spec(),
            Some(&status(phase.clone(), 1)),
            Some(Desired::Stopped),
            &world(None),
            now(),
        );
        assert_eq!(p.status.phase, Some(Phase::Stopping), "{phase:?}");
        assert!(p.actions.contains(&Action::ClearDesiredPhase));
    }
}

#[test]
fn desired_running_restarts_a_finished_session_at_attempt_1() {
    for phase in [Phase::Stopped, Phase::Completed, Phase::Failed] {
        let mut st = status(phase.clone(), 3);
        st.completion_time = Some(T0.into());
        let p = run_at(
            &spec(),
            Some(&st),
            Some(Desired::Running),
            &world(None),
            now(),
        );
        assert_eq!(p.status.phase, Some(Phase::Pending), "{phase:?}");
        assert_eq!(p.status.attempt, Some(1));
        assert_eq!(p.status.completion_time, None);
        assert_eq!(p.actions, vec![Action::ClearDesiredPhase]);
    }
}

#[test]
fn restarts_after_the_retries_ran_out_are_counted_and_others_are_not() {
    let exhausted = |restarts: Option<i64>| {
        let mut st = status(Phase::Failed, 3);
        st.restarts = restarts;
        st.conditions = Some(vec![Condition {
            type_: RETRIES_EXHAUSTED.into(),
            status: CS::True,
            reason: Some("OOMKilled".into()),
            message: None,
            last_transition_time: Some(T0.into()),
            observed_generation: Some(3),
        }]);
        st
    };
    for (before, after) in [(None, 1), (Some(1), 2)] {
        let p = run_at(
            &spec(),
            Some(&exhausted(before)),
            Some(Desired::Running),
            &world(None),
            now(),
        );
        assert_eq!(p.status.restarts, Some(after));
        assert!(cond_is(&p, RETRIES_EXHAUSTED, CS::False, "Restarted"));
    }
    // A stopped or completed session's restart spends nothing.
    let p = run_at(
        &spec(),
        Some(&status(Phase::Stopped, 1)),
        Some(Desired::Running),
        &world(None),
        now(),
    );
    assert_eq!(p.status.restarts, None);
}

#[test]
fn a_pod_name_taken_by_someone_else_is_waited_out_not_adopted_nor_a_failed_attempt() {
    let mut obs = world(None);
    obs.name_taken = true;
    let p = run(Some(&status(Phase::Pending, 1)), &obs);
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod { .. }))
    );
    assert!(cond_is(&p, POD_CREATED, CS::False, "NameTaken"));
    assert_eq!(p.status.attempt, Some(1), "no retry is spent on it");
    assert_eq!(p.requeue, Some(Duration::from_secs(30)));
    assert_eq!(
        p.events
            .iter()
            .map(|e| (e.reason, e.warning))
            .collect::<Vec<_>>(),
        [("PodNameTaken", true)]
    );
    // Said once: the next look finds the condition already set.
    let again = run(Some(&p.status), &obs);
    assert!(again.events.is_empty());
    // Once the name is free, the runner is created.
    let freed = run(Some(&p.status), &world(None));
    assert!(
        freed
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod { .. }))
    );
}

#[test]
fn a_service_name_taken_by_someone_else_is_never_made_nor_used() {
    let mut obs = world(None);
    obs.service = false;
    obs.foreign_service = true;
    let p = run(Some(&status(Phase::Pending, 1)), &obs);
    assert!(!p.actions.contains(&Action::CreateService));
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod { .. }))
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "ServiceNameTaken" && e.warning)
    );
}

#[test]
fn a_restart_waits_for_the_previous_runs_pod_to_go() {
    let st = status(Phase::Completed, 1);
    let old = world(Some(pod(
        1,
        RunnerState::Terminated {
            exit_code: 0,
            reason: "Completed".into(),
        },
        PodPhase::Running,
    )));
    let p = run_at(&spec(), Some(&st), Some(Desired::Running), &old, now());
    assert_eq!(p.status.phase, Some(Phase::Completed));
    assert_eq!(
        p.actions,
        vec![Action::DeletePod {
            name: "s1-runner-1".into()
        }],
        "annotation kept until acted on"
    );
}

#[test]
fn a_non_interactive_session_that_runs_too_long_fails_with_timeout() {
    let mut s = spec();
    s.interactive = Some(false);
    s.timeout_seconds = Some(600);
    let st = running_reconciled();
    let obs = world(Some(pod(
        1,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    let early = run_at(&s, Some(&st), None, &obs, at(100));
    assert_eq!(early.status.phase, Some(Phase::Running));
    assert_eq!(
        early.requeue,
        Some(Duration::from_secs(500)),
        "look again at the deadline"
    );
    let p = run_at(&s, Some(&st), None, &obs, at(600));
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert!(cond_is(&p, READY, CS::False, "Timeout"));
    assert_eq!(
        p.actions,
        vec![Action::DeletePod {
            name: "s1-runner-1".into()
        }]
    );
    // Interactive sessions have no run timeout.
    let mut i = s.clone();
    i.interactive = Some(true);
    assert_eq!(
        run_at(&i, Some(&st), None, &obs, at(6000)).status.phase,
        Some(Phase::Running)
    );
}

#[test]
fn an_inactive_session_stops_with_reason_inactivity() {
    let mut s = spec();
    s.inactivity_timeout_seconds = Some(60);
    let mut st = running_reconciled();
    st.last_activity_time = Some(at(30).to_string());
    let obs = world(Some(pod(
        1,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    assert_eq!(
        run_at(&s, Some(&st), None, &obs, at(60)).status.phase,
        Some(Phase::Running)
    );
    let p = run_at(&s, Some(&st), None, &obs, at(90));
    assert_eq!(p.status.phase, Some(Phase::Stopping));
    assert_eq!(p.status.stopped_reason, Some(StoppedReason::Inactivity));
}

#[test]
fn last_transition_time_changes_only_when_the_condition_status_changes() {
    let st = running_reconciled();
    let obs = world(Some(pod(
        1,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    let later = run_at(&spec(), Some(&st), None, &obs, at(300));
    assert!(!later.status_changed, "a steady state writes nothing");
    let before = cond(&later, READY).and_then(|c| c.last_transition_time.clone());
    assert_eq!(before.as_deref(), Some(T0));
    let mut changed = spec();
    changed.repos = Some(vec![]);
    let p = run_at(&changed, Some(&st), None, &obs, at(300));
    let ready = cond(&p, READY).and_then(|c| c.last_transition_time.clone());
    assert_eq!(ready, Some(at(300).to_string()), "Ready flipped to False");
    let started = cond(&p, RUNNER_STARTED).and_then(|c| c.last_transition_time.clone());
    assert_eq!(started.as_deref(), Some(T0), "RunnerStarted stayed True");
}

#[test]
fn stale_pods_of_earlier_attempts_are_deleted() {
    let mut obs = world(Some(pod(
        2,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    obs.stale_pods = vec!["s1-runner-1".into()];
    let p = run(Some(&status(Phase::Creating, 2)), &obs);
    assert!(p.actions.contains(&Action::DeletePod {
        name: "s1-runner-1".into()
    }));
}

#[test]
fn an_unknown_phase_is_left_alone() {
    let st = SessionStatus {
        phase: Some(Phase::Other("Hibernating".into())),
        ..SessionStatus::default()
    };
    let p = run(Some(&st), &world(None));
    assert!(!p.status_changed && p.actions.is_empty());
}

/// Told `target` successfully, at `runner`.
fn told<T>(runner: String, target: T) -> Option<Notice<T>> {
    Some(Notice {
        fresh: false,
        runner,
        target,
        ok: true,
        message: String::new(),
        at: now(),
        failures: 0,
    })
}

/// The status as `enter_running` leaves it for `attempt`: Running, nothing
/// reconciled yet for this runner.
fn just_running(attempt: i64) -> SessionStatus {
    run(
        Some(&status(Phase::Creating, attempt)),
        &world(Some(pod(
            attempt,
            RunnerState::Running { ready: true },
            PodPhase::Running,
        ))),
    )
    .status
}

#[test]
fn a_notice_to_an_earlier_attempts_runner_does_not_count_for_the_next() {
    // The seed incident: attempt 1's runner was told, attempt 2's never was.
    let mut obs = world(Some(pod(
        2,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    obs.workflow_notice = told(runner_uid(1), desired_workflow(&spec()));
    obs.repos_notice = told(runner_uid(1), desired_repos(&spec()));
    let p = run(Some(&just_running(2)), &obs);
    assert_eq!(
        p.actions,
        vec![Action::NotifyWorkflow(desired_workflow(&spec()))]
    );
    assert!(cond_is(&p, WORKFLOW_RECONCILED, CS::False, "Applying"));
    assert_eq!(p.status.reconciled_workflow, None);
    assert!(cond_is(&p, READY, CS::False, "Reconciling"));
}

#[test]
fn a_restart_reuses_the_pod_name_but_starts_untold() {
    // desired-phase Running after Completed: attempt 1 again, same pod name,
    // a new pod (new uid).
    let mut fresh = pod(1, RunnerState::Running { ready: true }, PodPhase::Running);
    fresh.uid = "uid-runner-1-after-restart".into();
    let mut obs = world(Some(fresh));
    obs.workflow_notice = told(runner_uid(1), desired_workflow(&spec()));
    let p = run(Some(&just_running(1)), &obs);
    assert_eq!(
        p.actions,
        vec![Action::NotifyWorkflow(desired_workflow(&spec()))]
    );
}

#[test]
fn after_a_controller_restart_the_status_says_whether_this_runner_was_told() {
    let obs = world(Some(pod(
        1,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    // Applied before the restart: the status says so, nothing is re-sent.
    let p = run(Some(&running_reconciled()), &obs);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(cond_is(&p, WORKFLOW_RECONCILED, CS::True, "Reconciled"));
    // Not applied (or lost with the old process's memory): told now.
    let p = run(Some(&just_running(1)), &obs);
    assert_eq!(
        p.actions,
        vec![Action::NotifyWorkflow(desired_workflow(&spec()))]
    );
}

#[test]
fn a_failed_attempt_and_a_restart_forget_what_the_status_says_was_reconciled() {
    let st = running_reconciled();
    assert!(st.reconciled_workflow.is_some() && st.reconciled_repos.is_some());
    let oom = world(Some(pod(
        1,
        RunnerState::Terminated {
            exit_code: 137,
            reason: "OOMKilled".into(),
        },
        PodPhase::Running,
    )));
    let p = run(Some(&st), &oom);
    assert_eq!(p.status.attempt, Some(2));
    assert_eq!(p.status.reconciled_workflow, None);
    assert_eq!(p.status.reconciled_repos, None);
    let mut done = st.clone();
    done.phase = Some(Phase::Completed);
    let p = run_at(
        &spec(),
        Some(&done),
        Some(Desired::Running),
        &world(None),
        now(),
    );
    assert_eq!(p.status.phase, Some(Phase::Pending));
    assert_eq!(p.status.reconciled_workflow, None);
    assert_eq!(p.status.reconciled_repos, None);
}

fn reasons(p: &Plan) -> Vec<(&'static str, bool)> {
    p.events.iter().map(|e| (e.reason, e.warning)).collect()
}

#[test]
fn events_tell_the_story_of_a_session_with_one_retry() {
    let cfg = PlanConfig { max_attempts: 2 };
    let step = |st: Option<&SessionStatus>, obs: &Observed| {
        let view = SessionView {
            name: "s1",
            generation: 3,
            desired: None,
            spec: &spec(),
            status: st,
        };
        plan(&view, obs, now(), &cfg)
    };
    let running = |a| {
        world(Some(pod(
            a,
            RunnerState::Running { ready: true },
            PodPhase::Running,
        )))
    };
    let oom = |a| {
        world(Some(pod(
            a,
            RunnerState::Terminated {
                exit_code: 137,
                reason: "OOMKilled".into(),
            },
            PodPhase::Running,
        )))
    };
    let new = step(None, &world(None));
    assert_eq!(reasons(&new), []);
    let creating = step(Some(&new.status), &world(None));
    assert_eq!(reasons(&creating), [("PodCreated", false)]);
    assert_eq!(
        creating.events[0].note,
        "runner pod s1-runner-1 created (attempt 1 of 2)"
    );
    let started = step(Some(&creating.status), &running(1));
    assert_eq!(reasons(&started), [("RunnerStarted", false)]);
    let mut told = running(1);
    told.workflow_notice = Some(Notice {
        fresh: true,
        runner: runner_uid(1),
        target: desired_workflow(&spec()),
        ok: true,
        message: String::new(),
        at: now(),
        failures: 0,
    });
    let applied = step(Some(&started.status), &told);
    assert_eq!(reasons(&applied), [("WorkflowApplied", false)]);
    assert_eq!(
        applied.events[0].note,
        "the runner loaded workflow https://github.com/acme/wf.git (branch main, path flows/bugfix)"
    );
    // Nothing new: nothing to say, and nothing to write (the condition
    // keeps saying Applied rather than being reworded).
    let quiet = step(Some(&applied.status), &told);
    assert_eq!(reasons(&quiet), []);
    assert!(!quiet.status_changed, "{:?}", quiet.status);

    let failed = step(Some(&quiet.status), &oom(1));
    assert_eq!(
        reasons(&failed),
        [("AttemptFailed", true), ("Retrying", false)]
    );
    assert_eq!(
        failed.events[0].note,
        "attempt 1 of 2 failed (OOMKilled): runner container exited with code 137 (OOMKilled)"
    );
    assert_eq!(
        failed.events[1].note,
        "starting attempt 2 of 2 on a new runner pod"
    );
    let creating = step(Some(&failed.status), &world(None));
    let started = step(Some(&creating.status), &running(2));
    let exhausted = step(Some(&started.status), &oom(2));
    assert_eq!(
        reasons(&exhausted),
        [("AttemptFailed", true), ("RetriesExhausted", true)]
    );
}

#[test]
fn a_failed_notice_is_an_event_when_it_is_news_only() {
    let mut obs = world(Some(pod(
        1,
        RunnerState::Running { ready: true },
        PodPhase::Running,
    )));
    let failed = |fresh| Notice {
        fresh,
        runner: runner_uid(1),
        target: desired_workflow(&spec()),
        ok: false,
        message: "POST http://runner/workflow: 503 Service Unavailable: runner busy".into(),
        at: now(),
        failures: 1,
    };
    obs.workflow_notice = Some(failed(true));
    let p = run(Some(&just_running(1)), &obs);
    assert_eq!(reasons(&p), [("WorkflowNoticeFailed", true)]);
    assert!(
        p.events[0]
            .note
            .ends_with("503 Service Unavailable: runner busy")
    );
    // The same failure seen again on a later reconcile (inside the backoff).
    obs.workflow_notice = Some(failed(false));
    let again = run(Some(&p.status), &obs);
    assert_eq!(reasons(&again), []);
}

#[test]
fn stopping_and_restarting_are_told_too() {
    let stopped = run(
        Some(&SessionStatus {
            stopped_reason: Some(StoppedReason::User),
            ..status(Phase::Stopping, 1)
        }),
        &world(None),
    );
    assert_eq!(reasons(&stopped), [("Stopped", false)]);
    assert_eq!(
        stopped.events[0].note,
        "the session is stopped (reason: user)"
    );
    let restarted = run_at(
        &spec(),
        Some(&stopped.status),
        Some(Desired::Running),
        &world(None),
        now(),
    );
    assert_eq!(reasons(&restarted), [("Restarted", false)]);
}

mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::admission::validate::status::{check_conditions, transition_allowed};
    use crate::admission::validate::view::StatusView;

    fn runner() -> impl Strategy<Value = RunnerState> {
        prop_oneof![
            Just(RunnerState::Unknown),
            Just(RunnerState::Waiting {
                reason: "ContainerCreating".into()
            }),
            Just(RunnerState::Waiting {
                reason: "ImagePullBackOff".into()
            }),
            any::<bool>().prop_map(|ready| RunnerState::Running { ready }),
            (
                prop_oneof![Just(0), Just(1), Just(137)],
                prop_oneof![Just("Completed"), Just("Error"), Just("OOMKilled")]
            )
                .prop_map(|(exit_code, r)| RunnerState::Terminated {
                    exit_code,
                    reason: r.into()
                }),
        ]
    }

    fn pod_view() -> impl Strategy<Value = Option<PodView>> {
        proptest::option::of(
            (
                runner(),
                prop_oneof![
                    Just(PodPhase::Pending),
                    Just(PodPhase::Running),
                    Just(PodPhase::Succeeded),
                    Just(PodPhase::Failed),
                    Just(PodPhase::Unknown)
                ],
                any::<bool>(),
                proptest::option::of(Just("Evicted".to_owned())),
            )
                .prop_map(|(runner, phase, deleting, reason)| PodView {
                    name: "s1-runner-1".into(),
                    uid: runner_uid(1),
                    ip: None,
                    phase,
                    reason,
                    deleting,
                    runner,
                    repos: spec().repos.unwrap_or_default(),
                }),
        )
    }

    fn phase() -> impl Strategy<Value = Option<Phase>> {
        proptest::option::of(
            proptest::sample::select(Phase::V1ALPHA2.to_vec()).prop_map(Phase::parse),
        )
    }

    fn notice<T: Clone + std::fmt::Debug + 'static>(
        target: T,
    ) -> impl Strategy<Value = Option<Notice<T>>> {
        proptest::option::of((any::<bool>(), 0u32..5, -10i64..10, 1i64..3).prop_map(
            move |(ok, failures, secs, told)| Notice {
                fresh: failures % 2 == 0,
                runner: runner_uid(told),
                target: target.clone(),
                ok,
                message: "m".into(),
                at: at(secs),
                failures,
            },
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        #[test]
        fn the_planner_never_plans_a_transition_v22_forbids(
            phase in phase(),
            attempt in 1i64..5,
            pod in pod_view(),
            desired in proptest::option::of(prop_oneof![Just(Desired::Running), Just(Desired::Stopped)]),
            interactive in any::<bool>(),
            timeout in proptest::option::of(0i64..1000),
            started in proptest::option::of(-2000i64..0),
            wf in notice(desired_workflow(&spec())),
            repos in notice(desired_repos(&spec())),
            rounds in 1usize..6,
            step in 0i64..400,
        ) {
            let mut s = spec();
            s.interactive = Some(interactive);
            s.timeout_seconds = timeout;
            let mut st = SessionStatus {
                phase,
                attempt: Some(attempt),
                start_time: started.map(|x| at(x).to_string()),
                ..SessionStatus::default()
            };
            let obs = Observed { pod, stale_pods: vec![], service: true, workflow_notice: wf, repos_notice: repos, ..Observed::default() };
            // Several rounds against the same world, as repeated reconciles would run.
            for round in 0..rounds {
                let t = at(step * round as i64);
                let p = run_at(&s, Some(&st), desired, &obs, t);
                let old = StatusView { phase: st.phase.as_ref(), restarts: None, observed_generation: None, conditions: &[] };
                prop_assert!(
                    transition_allowed(old.phase, p.status.phase.as_ref()),
                    "{:?} -> {:?}", st.phase, p.status.phase
                );
                let view = StatusView {
                    phase: p.status.phase.as_ref(),
                    restarts: p.status.restarts,
                    observed_generation: p.status.observed_generation,
                    conditions: p.status.conditions(),
                };
                let errs = check_conditions(&view, Some(3));
                prop_assert!(errs.is_empty(), "{errs:?}");
                // Nothing is (re)created once retries are exhausted, and a workflow
                // notice never precedes RunnerStarted=True.
                let exhausted = find_condition(p.status.conditions(), RETRIES_EXHAUSTED).is_some_and(|c| c.status == CS::True);
                if exhausted && p.status.phase == Some(Phase::Failed) {
                    let creates = p.actions.iter().any(|a| matches!(a, Action::CreatePod { .. }));
                    prop_assert!(!creates, "created a pod after RetriesExhausted");
                }
                if p.actions.iter().any(|a| matches!(a, Action::NotifyWorkflow(_))) {
                    prop_assert!(find_condition(p.status.conditions(), RUNNER_STARTED).is_some_and(|c| c.status == CS::True));
                }
                // Events are news: a plan that changes no status says only
                // what a notice sent just now answered.
                if !p.status_changed {
                    for e in &p.events {
                        prop_assert!(e.reason.ends_with("NoticeFailed"), "{e:?} without a status change");
                    }
                }
                if p.status.observed_generation == Some(3) && st.observed_generation != Some(3) {
                    prop_assert!(find_condition(p.status.conditions(), WORKFLOW_RECONCILED).is_some_and(|c| c.status == CS::True));
                    prop_assert!(find_condition(p.status.conditions(), REPOS_RECONCILED).is_some_and(|c| c.status == CS::True));
                }
                st = p.status;
            }
        }
    }

    /// What can happen between two reconciles.
    #[derive(Clone, Debug)]
    enum Event {
        /// The kubelet reports this state for the current runner pod.
        Kubelet(RunnerState, PodPhase),
        /// Notices from now on fail (true) or succeed.
        RunnerAnswers(bool),
        /// The user changes the workflow (index into three choices, 2 = none).
        Workflow(usize),
        Desire(Option<Desired>),
        /// The controller process restarts: its notice memory is gone.
        ControllerRestart,
        /// Someone deletes the current pod.
        PodDeleted,
        Tick(i64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (runner(), prop_oneof![Just(PodPhase::Pending), Just(PodPhase::Running), Just(PodPhase::Succeeded), Just(PodPhase::Failed)])
                .prop_map(|(r, p)| Event::Kubelet(r, p)),
            1 => any::<bool>().prop_map(Event::RunnerAnswers),
            1 => (0usize..3).prop_map(Event::Workflow),
            1 => proptest::option::of(prop_oneof![Just(Desired::Running), Just(Desired::Stopped)]).prop_map(Event::Desire),
            1 => Just(Event::ControllerRestart),
            1 => Just(Event::PodDeleted),
            1 => (0i64..20).prop_map(Event::Tick),
        ]
    }

    struct SimPod {
        uid: String,
        attempt: i64,
        runner: RunnerState,
        phase: PodPhase,
    }

    fn workflow_choice(i: usize) -> Option<ActiveWorkflow> {
        let url = |u: &str| ActiveWorkflow {
            git_url: Some(u.into()),
            branch: Some("main".into()),
            path: None,
        };
        match i {
            0 => Some(url("https://github.com/acme/wf.git")),
            1 => Some(url("https://github.com/acme/other-wf.git")),
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Driver, kubelet, runners and controller restarts simulated around
        /// the planner: whenever a status is written that says a Running
        /// attempt has the workflow, that attempt's runner pod (by uid) was
        /// told exactly that workflow, successfully.
        #[test]
        fn the_runner_that_reaches_running_is_told_before_workflow_reconciled(
            events in proptest::collection::vec(event(), 1..40),
            max_attempts in 1i64..4,
        ) {
            let cfg = PlanConfig { max_attempts };
            let mut spec = spec();
            let mut st: Option<SessionStatus> = None;
            let mut desired: Option<Desired> = None;
            let mut pods: Vec<SimPod> = Vec::new();
            let mut memory: Option<Notice<Option<ReconciledWorkflow>>> = None;
            let mut sent: Vec<(String, Option<ReconciledWorkflow>)> = Vec::new();
            let mut failing = false;
            let mut uids = 0u32;
            let mut t = 0i64;
            for ev in events {
                match ev {
                    Event::Kubelet(r, ph) => {
                        let attempt = st.as_ref().and_then(|s| s.attempt).unwrap_or(1);
                        if let Some(p) = pods.iter_mut().find(|p| p.attempt == attempt) {
                            p.runner = r;
                            p.phase = ph;
                        }
                    }
                    Event::RunnerAnswers(fail) => failing = fail,
                    Event::Workflow(i) => spec.active_workflow = workflow_choice(i),
                    Event::Desire(d) => desired = d,
                    Event::ControllerRestart => memory = None,
                    Event::PodDeleted => {
                        let attempt = st.as_ref().and_then(|s| s.attempt).unwrap_or(1);
                        pods.retain(|p| p.attempt != attempt);
                    }
                    Event::Tick(secs) => t += secs,
                }
                // One reconcile, as the driver runs it: observe, plan, act,
                // notify and re-plan with the answers, write status.
                let attempt = st.as_ref().and_then(|s| s.attempt).unwrap_or(1).max(1);
                let observe = |pods: &[SimPod], memory: &Option<Notice<Option<ReconciledWorkflow>>>| Observed {
                    pod: pods.iter().find(|p| p.attempt == attempt).map(|p| PodView {
                        name: pod_name("s1", p.attempt),
                        uid: p.uid.clone(),
                        ip: None,
                        phase: p.phase.clone(),
                        reason: None,
                        deleting: false,
                        runner: p.runner.clone(),
                        repos: spec.repos.clone().unwrap_or_default(),
                    }),
                    stale_pods: pods.iter().filter(|p| p.attempt != attempt).map(|p| pod_name("s1", p.attempt)).collect(),
                    service: true,
                    // Whatever the memory holds, even for another runner:
                    // the planner must tell them apart.
                    workflow_notice: memory.clone(),
                    repos_notice: None,
                    ..Observed::default()
                };
                let now_t = at(t);
                let obs = observe(&pods, &memory);
                let view = SessionView { name: "s1", generation: 3, desired, spec: &spec, status: st.as_ref() };
                let mut planned = plan(&view, &obs, now_t, &cfg);
                let mut notified = false;
                for a in &planned.actions {
                    match a {
                        Action::CreatePod { attempt, .. } if !pods.iter().any(|p| p.attempt == *attempt) => {
                            uids += 1;
                            pods.push(SimPod { uid: format!("pod-{uids}"), attempt: *attempt, runner: RunnerState::Unknown, phase: PodPhase::Pending });
                        }
                        Action::DeletePod { name } => pods.retain(|p| &pod_name("s1", p.attempt) != name),
                        Action::NotifyWorkflow(w) => {
                            let Some(target) = obs.pod.as_ref() else {
                                return Err(TestCaseError::fail("told a runner that is not there"));
                            };
                            if !failing {
                                sent.push((target.uid.clone(), w.clone()));
                            }
                            memory = Some(Notice { fresh: false, runner: target.uid.clone(), target: w.clone(), ok: !failing, message: String::new(), at: now_t, failures: u32::from(failing) });
                            notified = true;
                        }
                        _ => {}
                    }
                }
                if notified {
                    let obs = observe(&pods, &memory);
                    planned = plan(&view, &obs, now_t, &cfg);
                }
                let written = planned.status;
                let reconciled = find_condition(written.conditions(), WORKFLOW_RECONCILED).is_some_and(|c| c.status == CS::True);
                if written.phase == Some(Phase::Running)
                    && reconciled
                    && let Some(w) = desired_workflow(&spec)
                {
                    let current = pods.iter().find(|p| Some(p.attempt) == written.attempt);
                    let told = current.is_some_and(|p| sent.iter().any(|(uid, x)| uid == &p.uid && x.as_ref() == Some(&w)));
                    prop_assert!(told, "WorkflowReconciled=True for attempt {:?} whose runner was never told {w:?}; sent {sent:?}", written.attempt);
                }
                st = Some(written);
            }
        }
    }
}
