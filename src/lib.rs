//! agentic-webhook: admission, conversion and lifecycle for `AgenticSession`.
//!
//! Pure core: [`api`], [`admission`], [`conversion`], [`lifecycle::plan`].
//! Edges: [`server`], [`lifecycle::controller`], [`cli`], [`certs`],
//! [`apiclient`].
//! Benchmark and load-generator request bodies: [`workload`].

pub mod admission;
pub mod api;
pub mod apiclient;
pub mod certmgr;
pub mod certs;
pub mod cli;
pub mod client;
pub mod conversion;
pub mod duration;
pub mod filewatch;
pub mod lifecycle;
pub mod quantity;
pub mod server;
pub mod workload;
