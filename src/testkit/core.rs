//! The pure core exactly as a handler runs it (decode → rules → encode),
//! for the benches that time it (`benches/core.rs`) and count its
//! instructions (`benches/instructions.rs`).

use crate::admission::{AdmissionService, Config, Policy, Principals, review};
use crate::conversion::{ConversionService, Converter, review as creview};

use super::workload;

/// The rules as `serve` runs them, the workload's controller user known.
pub fn policy() -> Policy {
    Policy::new(Config {
        principals: Principals {
            users: vec![workload::CONTROLLER_USER.into()],
            groups: vec![],
            ..Principals::default()
        },
        ..Config::default()
    })
}

/// One `/mutate` call: the answer's bytes (empty for a malformed body).
pub fn mutate(p: &Policy, body: &[u8]) -> Vec<u8> {
    match review::decode(body) {
        Ok(r) => r.answer(p.mutate(r.request())).to_vec(),
        Err(_) => Vec::new(),
    }
}

/// One `/validate` call.
pub fn validate(p: &Policy, body: &[u8]) -> Vec<u8> {
    match review::decode(body) {
        Ok(r) => r.answer(p.validate(r.request())).to_vec(),
        Err(_) => Vec::new(),
    }
}

/// One `/convert` call.
pub fn convert(body: &[u8]) -> Vec<u8> {
    match creview::decode(body) {
        Ok(r) => {
            let (outcome, _) = Converter.convert(r.request());
            r.answer(outcome).to_vec()
        }
        Err(_) => Vec::new(),
    }
}
