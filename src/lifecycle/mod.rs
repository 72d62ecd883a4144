//! The lifecycle reconciler: a pure planner ([`plan`]) and its kube-runtime
//! driver ([`controller`]), with the runner notice client ([`notice`]) and
//! the kube objects it owns ([`world`]).

pub mod controller;
pub mod notice;
pub mod plan;
pub mod world;
