//! agentic-webhook: admission, conversion and lifecycle for `AgenticSession`.
//!
//! Pure core: [`api`], [`admission`], [`conversion`], [`lifecycle::plan`].
//! Edges: [`server`], [`lifecycle::controller`], [`cli`], [`certs`],
//! [`apiclient`].
//! Benchmark and load-generator request bodies: [`workload`].

pub mod admission;
pub mod api;
pub mod apiclient;
pub mod certs;
pub mod cli;
pub mod conversion;
pub mod duration;
pub(crate) mod filewatch;
pub mod lifecycle;
pub mod quantity;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
