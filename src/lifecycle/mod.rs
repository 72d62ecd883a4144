//! The lifecycle reconciler: a pure planner ([`plan`]) and its kube-runtime
//! driver ([`controller`]) with its caches ([`cache`]), memory ([`memory`])
//! and Events ([`events`]), the runner notice client ([`notice`]) and the
//! kube objects it owns ([`world`]).

pub mod cache;
pub mod controller;
pub mod events;
pub mod memory;
pub mod notice;
pub mod plan;
pub mod world;
