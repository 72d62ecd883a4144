//! Test and benchmark support, built only with the `testkit` feature (the
//! tests, benches and examples turn it on): an HTTP/1.1 and HTTP/2 client
//! over rustls that tells a lost request from one never processed, and
//! realistic request bodies for benchmarks and the load generator.

pub mod client;
pub mod workload;
