//! The lifecycle reconciler: a pure planner ([`plan`]) and its kube-runtime
//! driver ([`controller`]), which also owns the runner notice client.

pub mod plan;
