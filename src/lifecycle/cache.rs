//! What the reconciler sees of its pods and services: the controller's own
//! watch caches (reflector stores, fed by the same streams that trigger
//! reconciles), read by name in O(1) instead of an API call per reconcile;
//! plus what it just did that the caches may not show yet (expectations, as
//! controller-runtime's ReplicaSet controller keeps them), so a lagging
//! cache never makes it create a second pod or mistake the pod it just
//! created for a deleted one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;

use super::mark::Marker;
use super::plan::{PodView, pod_name, service_name};
use super::world;

/// How long a name found taken by someone else's object is believed before
/// it is tried again (the tenant may have deleted it).
const FOREIGN_TTL: Duration = Duration::from_secs(30);

/// How long an expectation outlives its write if the cache never shows it
/// (a watch normally shows it within milliseconds, and one that missed the
/// event is re-listed long before this).
const EXPECTATION_TTL: Duration = Duration::from_secs(300);

type Key = (String, String);

#[derive(Default)]
struct Expectations {
    /// Pods this controller created, until the cache shows them.
    created_pods: HashMap<Key, (Arc<Pod>, Instant)>,
    /// Pods this controller deleted (by uid), until the cache drops them or
    /// shows their deletion.
    deleted_pods: HashMap<String, Instant>,
    /// Services this controller created, until the cache shows them.
    created_services: HashMap<Key, Instant>,
    /// Pod and Service names found taken by objects the reconciler did not
    /// make (a create answered AlreadyExists), for a while.
    foreign_pods: HashMap<Key, Instant>,
    foreign_services: HashMap<Key, Instant>,
}

impl Expectations {
    fn len(&self) -> usize {
        self.created_pods.len()
            + self.deleted_pods.len()
            + self.created_services.len()
            + self.foreign_pods.len()
            + self.foreign_services.len()
    }
}

/// The readers; [`CacheWriters`] go to the reflectors.
pub struct Cache {
    pods: Store<Pod>,
    services: Store<Service>,
    /// Only what carries the reconciler's mark is its own.
    marker: Marker,
    expected: Mutex<Expectations>,
    /// One reconcile at a time waits on the stores' readiness (see `ready`).
    ready_gate: tokio::sync::Mutex<()>,
}

/// The write halves of the caches, fed by `run_controller`'s reflectors (or
/// by a test).
pub struct CacheWriters {
    pub pods: Writer<Pod>,
    pub services: Writer<Service>,
}

impl CacheWriters {
    /// Fill the caches as one completed initial list (tests).
    pub fn seed(&mut self, pods: Vec<Pod>, services: Vec<Service>) {
        self.pods.apply_watcher_event(&watcher::Event::Init);
        for p in pods {
            self.pods.apply_watcher_event(&watcher::Event::InitApply(p));
        }
        self.pods.apply_watcher_event(&watcher::Event::InitDone);
        self.services.apply_watcher_event(&watcher::Event::Init);
        for s in services {
            self.services
                .apply_watcher_event(&watcher::Event::InitApply(s));
        }
        self.services.apply_watcher_event(&watcher::Event::InitDone);
    }

    /// One later change to a pod, as a watch would deliver it (tests).
    pub fn apply_pod(&mut self, pod: Pod) {
        self.pods.apply_watcher_event(&watcher::Event::Apply(pod));
    }
}

/// What the caches say about one session's objects.
#[derive(Debug, Default)]
pub struct Seen {
    /// The runner pod of the current attempt.
    pub pod: Option<PodView>,
    /// Runner pods of other attempts, not already being deleted.
    pub stale_pods: Vec<String>,
    /// The session's Service exists and is ours.
    pub service: bool,
    /// The current attempt's pod name is taken by a pod that is not ours.
    pub name_taken: bool,
    /// The Service name is taken by a Service that is not ours.
    pub foreign_service: bool,
}

fn controlled_by(pod: &Pod, uid: Option<&str>) -> bool {
    let Some(uid) = uid else { return true };
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

impl Cache {
    pub fn new(marker: Marker) -> (Cache, CacheWriters) {
        let (pods, pod_writer) = reflector::store();
        let (services, service_writer) = reflector::store();
        (
            Cache {
                pods,
                services,
                marker,
                expected: Mutex::new(Expectations::default()),
                ready_gate: tokio::sync::Mutex::new(()),
            },
            CacheWriters {
                pods: pod_writer,
                services: service_writer,
            },
        )
    }

    /// Until both caches hold a complete list: before that, a missing pod
    /// means nothing (it would read as "the runner pod is gone").
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        // kube-runtime's readiness is a oneshot receiver behind a lock: it
        // keeps the waker of the last task that polled it, so of several
        // reconciles waiting at start only one was ever woken and the others
        // waited until their session next changed. The others queue here
        // instead (a tokio mutex wakes each in turn) and find it ready.
        let _one = self.ready_gate.lock().await;
        self.pods.wait_until_ready().await?;
        self.services.wait_until_ready().await
    }

    /// Entries kept beside the caches (a gauge).
    pub fn expectations(&self) -> usize {
        self.expected.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// A pod from the cache, or the one we just created if the cache has
    /// not caught up; with whether we deleted it meanwhile.
    fn pod(&self, ns: &str, name: &str, now: Instant) -> Option<(Arc<Pod>, bool)> {
        let cached = self.pods.get(&ObjectRef::new(name).within(ns));
        let Ok(mut expected) = self.expected.lock() else {
            return cached.map(|p| (p, false));
        };
        let key = (ns.to_owned(), name.to_owned());
        let created = match (expected.created_pods.get(&key), &cached) {
            // The cache shows it (or something newer under the name): done.
            (Some(_), Some(_)) => {
                expected.created_pods.remove(&key);
                None
            }
            (Some((pod, at)), None) if now.duration_since(*at) < EXPECTATION_TTL => {
                Some(pod.clone())
            }
            (Some(_), None) => {
                expected.created_pods.remove(&key);
                None
            }
            (None, _) => None,
        };
        let pod = cached.or(created)?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let deleted = match expected.deleted_pods.get(&uid) {
            Some(at)
                if pod.metadata.deletion_timestamp.is_none()
                    && now.duration_since(*at) < EXPECTATION_TTL =>
            {
                true
            }
            Some(_) => {
                expected.deleted_pods.remove(&uid);
                false
            }
            None => false,
        };
        Some((pod, deleted))
    }

    /// The session's runner pods (attempts `1..=highest`, read by name) and
    /// Service, as far as the caches and our expectations say. Only objects
    /// carrying the reconciler's mark for this session count: a tenant's
    /// look-alike (labels, owner reference and all) is never taken for a
    /// runner, its notices' target or something to delete.
    pub fn observe(
        &self,
        ns: &str,
        session: &str,
        session_uid: Option<&str>,
        attempt: i64,
        highest: i64,
    ) -> Seen {
        let now = Instant::now();
        let uid = session_uid.unwrap_or_default();
        let mut seen = Seen::default();
        for k in 1..=highest.max(attempt) {
            let Some((pod, deleted)) = self.pod(ns, &pod_name(session, k), now) else {
                continue;
            };
            let ours = controlled_by(&pod, session_uid)
                && world::pod_attempt(&pod) == Some(k)
                && world::pod_is_ours(&pod, uid, k, &self.marker);
            if !ours {
                seen.name_taken |= k == attempt;
                continue;
            }
            let deleting = deleted || pod.metadata.deletion_timestamp.is_some();
            if k == attempt {
                let mut view = world::pod_view(&pod);
                view.deleting = deleting;
                seen.pod = Some(view);
            } else if !deleting {
                seen.stale_pods.push(pod.name_any());
            }
        }
        let name = service_name(session);
        match self.services.get(&ObjectRef::new(&name).within(ns)) {
            Some(svc) if world::service_is_ours(&svc, session, uid, &self.marker) => {
                seen.service = true;
            }
            Some(_) => seen.foreign_service = true,
            None => {}
        }
        if let Ok(mut expected) = self.expected.lock() {
            let key = (ns.to_owned(), name);
            match expected.created_services.get(&key) {
                Some(_) if seen.service => {
                    expected.created_services.remove(&key);
                }
                Some(at) if now.duration_since(*at) < EXPECTATION_TTL => seen.service = true,
                Some(_) => {
                    expected.created_services.remove(&key);
                }
                None => {}
            }
            let fresh =
                |at: Option<&Instant>| at.is_some_and(|at| now.duration_since(*at) < FOREIGN_TTL);
            if seen.pod.is_none()
                && fresh(
                    expected
                        .foreign_pods
                        .get(&(ns.to_owned(), pod_name(session, attempt))),
                )
            {
                seen.name_taken = true;
            }
            if !seen.service && fresh(expected.foreign_services.get(&key)) {
                seen.foreign_service = true;
            }
        }
        seen
    }

    /// A create of the pod `name` found it taken by an object that is not ours.
    pub fn foreign_pod(&self, ns: &str, name: &str) {
        if let Ok(mut e) = self.expected.lock() {
            e.foreign_pods
                .insert((ns.to_owned(), name.to_owned()), Instant::now());
        }
    }

    /// A create of the Service `name` found it taken by one that is not ours.
    pub fn foreign_service(&self, ns: &str, name: &str) {
        if let Ok(mut e) = self.expected.lock() {
            e.foreign_services
                .insert((ns.to_owned(), name.to_owned()), Instant::now());
        }
    }

    /// The verifier the driver checks a pod it fetched with.
    pub fn marker(&self) -> &Marker {
        &self.marker
    }

    /// Drop expectations past their time (whatever they were about is gone
    /// or long visible); called from the controller's housekeeping tick.
    pub fn sweep(&self) {
        let now = Instant::now();
        let fresh = |at: &Instant| now.duration_since(*at) < EXPECTATION_TTL;
        if let Ok(mut e) = self.expected.lock() {
            e.created_pods.retain(|_, (_, at)| fresh(at));
            e.deleted_pods.retain(|_, at| fresh(at));
            e.created_services.retain(|_, at| fresh(at));
            e.foreign_pods
                .retain(|_, at| now.duration_since(*at) < FOREIGN_TTL);
            e.foreign_services
                .retain(|_, at| now.duration_since(*at) < FOREIGN_TTL);
        }
    }

    /// We created `pod` (the apiserver's answer, uid and all).
    pub fn created_pod(&self, pod: Pod) {
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.name_any(),
        );
        if let Ok(mut e) = self.expected.lock() {
            e.created_pods.insert(key, (Arc::new(pod), Instant::now()));
        }
    }

    /// We deleted the pod `name` (whatever uid it has now).
    pub fn deleted_pod(&self, ns: &str, name: &str) {
        let now = Instant::now();
        let uid = self
            .pod(ns, name, now)
            .and_then(|(p, _)| p.metadata.uid.clone());
        if let (Some(uid), Ok(mut e)) = (uid, self.expected.lock()) {
            e.deleted_pods.insert(uid, now);
        }
    }

    /// We created (or found) the session's Service.
    pub fn created_service(&self, ns: &str, name: &str) {
        if let Ok(mut e) = self.expected.lock() {
            e.created_services
                .insert((ns.to_owned(), name.to_owned()), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn marker() -> Marker {
        Marker::new(&[3; 32])
    }

    /// A runner pod as the reconciler makes it: marked for `owner`.
    fn pod(name: &str, uid: &str, attempt: i64, owner: &str) -> Pod {
        let mut p = unmarked(name, uid, attempt, owner);
        world::mark_pod(&mut p, owner, attempt, &marker());
        p
    }

    /// The same labels and owner reference, no mark: a tenant's look-alike.
    fn unmarked(name: &str, uid: &str, attempt: i64, owner: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid,
                         "labels": {"vteam.ambient-code/attempt": attempt.to_string(),
                                    "app.kubernetes.io/managed-by": "agentic-webhook"},
                         "ownerReferences": [{"apiVersion": "v", "kind": "AgenticSession", "name": "s1",
                                              "uid": owner, "controller": true}]},
        }))
        .expect("the expected shape")
    }

    #[test]
    fn a_look_alike_pod_is_never_the_runner_and_holds_its_name() {
        let (cache, mut w) = Cache::new(marker());
        let mut copied = unmarked("s1-runner-2", "p2", 2, "u1");
        // A mark copied from the real attempt-1 pod does not fit attempt 2.
        let real = pod("s1-runner-1", "p1", 1, "u1");
        copied.metadata.annotations = real.metadata.annotations.clone();
        w.seed(
            vec![real, copied, unmarked("s1-runner-3", "p3", 3, "u1")],
            vec![],
        );
        let seen = cache.observe("ns", "s1", Some("u1"), 2, 3);
        assert!(seen.pod.is_none());
        assert!(seen.name_taken);
        // Look-alikes are never deleted as stale either; the real one is.
        assert_eq!(seen.stale_pods, ["s1-runner-1"]);
        // A create that found a pod without our labels says the same.
        let (cache, mut w) = Cache::new(marker());
        w.seed(vec![], vec![]);
        cache.foreign_pod("ns", "s1-runner-1");
        assert!(cache.observe("ns", "s1", Some("u1"), 1, 3).name_taken);
        cache.foreign_service("ns", "session-s1");
        let seen = cache.observe("ns", "s1", Some("u1"), 1, 3);
        assert!(seen.foreign_service && !seen.service);
    }

    #[tokio::test]
    async fn every_reconcile_waiting_for_the_caches_is_released() {
        let (cache, mut w) = Cache::new(marker());
        let cache = Arc::new(cache);
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.ready().await.is_ok() })
            })
            .collect();
        // All eight are waiting before the caches fill.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        w.seed(Vec::new(), Vec::new());
        for waiter in waiters {
            let released = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert!(matches!(released, Ok(Ok(true))), "a waiter was never woken");
        }
    }

    #[test]
    fn the_cache_is_read_by_name_and_only_owned_pods_count() {
        let (cache, mut w) = Cache::new(marker());
        w.seed(
            vec![
                pod("s1-runner-1", "p1", 1, "u1"),
                pod("s1-runner-2", "p2", 2, "u1"),
                pod("s1-runner-3", "p3", 3, "someone-else"),
            ],
            vec![],
        );
        let seen = cache.observe("ns", "s1", Some("u1"), 2, 3);
        assert_eq!(seen.pod.map(|p| p.uid), Some("p2".to_owned()));
        assert_eq!(seen.stale_pods, ["s1-runner-1"]);
        assert!(!seen.service);
    }

    #[test]
    fn a_pod_just_created_counts_until_the_cache_shows_it() {
        let (cache, mut w) = Cache::new(marker());
        w.seed(vec![], vec![]);
        cache.created_pod(pod("s1-runner-1", "p1", 1, "u1"));
        cache.created_service("ns", "session-s1");
        assert_eq!(cache.expectations(), 2);
        let seen = cache.observe("ns", "s1", Some("u1"), 1, 3);
        assert_eq!(seen.pod.map(|p| p.uid), Some("p1".to_owned()));
        assert!(seen.service);
        // The watch delivers it: the expectation is done.
        w.apply_pod(pod("s1-runner-1", "p1", 1, "u1"));
        let seen = cache.observe("ns", "s1", Some("u1"), 1, 3);
        assert_eq!(seen.pod.map(|p| p.uid), Some("p1".to_owned()));
        assert_eq!(
            cache.expectations(),
            1,
            "the service is still only expected"
        );
    }

    #[test]
    fn a_pod_just_deleted_reads_as_deleting_not_as_stale_or_current() {
        let (cache, mut w) = Cache::new(marker());
        w.seed(
            vec![
                pod("s1-runner-1", "p1", 1, "u1"),
                pod("s1-runner-2", "p2", 2, "u1"),
            ],
            vec![],
        );
        cache.deleted_pod("ns", "s1-runner-1");
        cache.deleted_pod("ns", "s1-runner-2");
        let seen = cache.observe("ns", "s1", Some("u1"), 2, 2);
        assert!(seen.stale_pods.is_empty(), "deleted once is enough");
        assert_eq!(seen.pod.map(|p| p.deleting), Some(true));
    }
}
