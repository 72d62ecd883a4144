//! Kubernetes Events for what the planner says happened, as
//! `kubectl describe agenticsession` shows them.

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use super::metrics::Metrics;
use crate::api::resource::AgenticSession;

use super::plan::Happened;

/// One recorder for the whole controller: it folds repeats of an Event into
/// a series (a count) instead of a new Event per reconcile.
pub fn recorder(client: Client, controller: &str, instance: Option<String>) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: controller.to_owned(),
            instance,
        },
    )
}

/// Publish what the plan says happened. Events are for people: a refused
/// one is logged and counted, and never fails the reconcile.
pub async fn publish(
    recorder: &Recorder,
    metrics: &Metrics,
    session: &AgenticSession,
    events: &[Happened],
) {
    if events.is_empty() {
        return;
    }
    let mut regarding = session.object_ref(&());
    // Without the resourceVersion, repeats match and fold into a series.
    regarding.resource_version = None;
    for e in events {
        let event = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.to_owned(),
            note: Some(e.note.chars().take(1024).collect()),
            action: e.action.to_owned(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &regarding).await {
            metrics.event_errors.inc();
            tracing::warn!(session = %session.name_any(), namespace = ?session.namespace(), reason = e.reason, %error, "event not recorded");
        }
    }
}
