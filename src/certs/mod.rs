//! Certificates, in one tree as controller-runtime's certwatcher keeps
//! them: [`generate`] a CA and the pairs it signs (rcgen), load a pair and
//! serve it from memory ([`serving`]), reload it when its files change
//! ([`watch`]), or [`manage`] CA and pairs in the cluster
//! (`serve --manage-certs`, with the rotation arithmetic in [`authority`]).

pub(crate) mod authority;
pub(crate) mod generate;
pub mod manage;
pub(crate) mod metrics;
pub mod serving;
pub(crate) mod watch;

pub use generate::*;
