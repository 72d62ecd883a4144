//! The lifecycle reconciler: a pure planner ([`plan`]) and its kube-runtime
//! driver ([`controller`]) with its caches ([`cache`]), memory ([`memory`])
//! and Events ([`events`]), the runner notice client ([`notice`]), the
//! kube objects it owns ([`world`]), made from the platform team's runner pod
//! template ([`template`], checked against the [`restricted`] profile).

pub mod cache;
pub mod contract;
pub mod controller;
pub(crate) mod events;
pub(crate) mod key;
pub mod mark;
pub(crate) mod memory;
pub mod metrics;
pub mod notice;
pub mod plan;
pub mod render;
pub(crate) mod restricted;
pub mod template;
pub mod world;
