//! Memory as a budget: from the memory the process may use (`--memory-limit`,
//! else the cgroup's limit) size the limits that bound its peak, and charge
//! each request what decoding it will cost before it is decoded.
//!
//! The model is measured (BENCHMARKS.md, "Memory"), release build:
//! - idle: ~11 MiB RSS; budgeted as 24 MiB (runtime, TLS, caches, slack);
//! - an idle TLS connection: ~12 KiB; budgeted as 16 KiB;
//! - a request: its body once while read, then what decoding makes of it.
//!   A ConversionReview keeps objects as borrowed raw JSON and writes the
//!   converted ones into one buffer: 2.0× its body (60 MB review: 120 MB),
//!   plus one object's decoding at a time. An AdmissionReview is decoded
//!   into typed objects: up to 4.9× its body for long strings (a legacy
//!   prompt also goes into the patch), plus 30–66 bytes per JSON value
//!   (`{"k1":"v",...}` and `[0,0,...]` shapes).
//!
//! Estimates err high: 5× + 80 bytes per `{ [ , :` for admission, 2.25×
//! for conversion plus the largest object's admission-style estimate.

use std::path::Path;

use serde_json::value::RawValue;

/// Memory the process uses before any request.
pub const BASELINE: u64 = 24 << 20;
/// Memory an open connection holds (TLS buffers, HTTP/2 state).
pub const PER_CONNECTION: u64 = 16 << 10;
/// The share of the limit the budget plans to use; the rest is headroom
/// for the allocator's fragmentation and what the model misses.
pub const PLANNED_SHARE: f64 = 0.75;

const BYTES_PER_VALUE: usize = 80;

/// JSON values in `json`, over-counted: every `{ [ , :` (strings included).
pub fn structural(json: &[u8]) -> usize {
    json.iter()
        .filter(|&&b| matches!(b, b'{' | b'[' | b',' | b':'))
        .count()
}

/// What decoding and answering an AdmissionReview of this body may take.
pub fn admission_cost(body: &[u8]) -> usize {
    body.len()
        .saturating_mul(5)
        .saturating_add(structural(body).saturating_mul(BYTES_PER_VALUE))
}

/// What a request of `len` bytes is charged before its body is read: its
/// cost at up to one JSON value per 16 bytes (Kubernetes objects have
/// fewer). Only a denser body is charged more once read, and refused with
/// 429 if that is not free at once: a request never waits for memory while
/// holding some.
pub fn upfront_cost(len: usize, conversion: bool) -> usize {
    if conversion {
        len.saturating_mul(9).div_ceil(4).saturating_add(1 << 20)
    } else {
        len.saturating_mul(10)
    }
}

/// What converting a ConversionReview may take: the body and the converted
/// copy, and one object decoded at a time (the largest).
pub fn conversion_cost(body_len: usize, objects: &[&RawValue]) -> usize {
    let largest = objects
        .iter()
        .map(|o| admission_cost(o.get().as_bytes()))
        .max()
        .unwrap_or(0);
    body_len
        .saturating_mul(9)
        .div_ceil(4)
        .saturating_add(largest)
}

/// Limits sized from a memory limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sized {
    /// Bytes of request memory (bodies and their decoding) at once.
    pub request_memory: usize,
    pub admission_body: usize,
    pub conversion_body: usize,
    pub max_concurrent: usize,
    pub max_connections: usize,
}

/// The defaults when no limit is known (as before budgets existed).
pub const UNLIMITED: Sized = Sized {
    request_memory: 256 << 20,
    admission_body: 8 << 20,
    conversion_body: 64 << 20,
    max_concurrent: 256,
    max_connections: 1024,
};

/// Limits that keep the peak under [`PLANNED_SHARE`] of `limit`: an eighth
/// of what is left after the baseline for connections, the rest for
/// requests; no body larger than its decoding can fit; none of it above
/// the unlimited defaults.
pub fn size(limit: u64) -> Sized {
    let planned = (limit as f64 * PLANNED_SHARE) as u64;
    let usable = planned.saturating_sub(BASELINE);
    let max_connections =
        ((usable / 8) / PER_CONNECTION).clamp(16, UNLIMITED.max_connections as u64) as usize;
    let requests = usable.saturating_sub(max_connections as u64 * PER_CONNECTION);
    let request_memory = (requests as usize).clamp(1 << 20, UNLIMITED.request_memory);
    Sized {
        request_memory,
        // A body must fit its own decoding: 2.25× for conversion, 10× for
        // admission (see `upfront_cost`).
        // (Less a MiB for the one object decoded at a time.)
        conversion_body: (request_memory.saturating_sub(1 << 20) * 4 / 9)
            .min(UNLIMITED.conversion_body),
        admission_body: (request_memory / 10).min(UNLIMITED.admission_body),
        max_concurrent: (request_memory / (256 << 10)).clamp(8, UNLIMITED.max_concurrent),
        max_connections,
    }
}

/// The cgroup's memory limit: `memory.max` (v2) or
/// `memory/memory.limit_in_bytes` (v1) under `root`; none when unlimited.
pub fn cgroup_limit(root: &Path) -> Option<u64> {
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let v2 = read(&root.join("memory.max"));
    let v1 = || read(&root.join("memory").join("memory.limit_in_bytes"));
    let text = v2.or_else(v1)?;
    let n: u64 = text.trim().parse().ok()?;
    // v1 says "unlimited" with a huge page-aligned number.
    (n < (1 << 60)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_128_mib_limit_is_planned_to_96_mib() {
        let s = size(128 << 20);
        let conns = s.max_connections as u64 * PER_CONNECTION;
        assert!(
            BASELINE + conns + s.request_memory as u64 <= 96 << 20,
            "{s:?}"
        );
        assert_eq!(s.max_connections, 576);
        assert_eq!(s.request_memory, 63 << 20);
        assert_eq!(s.admission_body, (63 << 20) / 10);
        assert_eq!(s.conversion_body, (62 << 20) * 4 / 9);
        assert_eq!(s.max_concurrent, 252);
        // 256 MiB keeps today's body limits.
        let s = size(256 << 20);
        assert_eq!((s.admission_body, s.conversion_body), (8 << 20, 64 << 20));
        assert_eq!(s.max_connections, 1024);
        // Large limits never exceed the unlimited defaults.
        assert_eq!(size(64 << 30), UNLIMITED);
        // Tiny ones still leave something to serve with.
        let s = size(16 << 20);
        assert!(
            s.request_memory >= 1 << 20 && s.max_concurrent >= 8,
            "{s:?}"
        );
    }

    #[test]
    fn value_dense_bodies_cost_more_than_string_bodies() {
        let prompt = format!("{{\"p\":\"{}\"}}", "x".repeat(1000));
        let zeros = format!("[{}0]", "0,".repeat(500));
        assert_eq!(admission_cost(prompt.as_bytes()), 5 * prompt.len() + 80 * 2);
        assert_eq!(admission_cost(zeros.as_bytes()), 5 * zeros.len() + 80 * 501);
        let objects: Vec<Box<RawValue>> = ["{\"a\":1}", "[1,2,3]"]
            .iter()
            .filter_map(|s| RawValue::from_string((*s).to_owned()).ok())
            .collect();
        let refs: Vec<&RawValue> = objects.iter().map(|b| b.as_ref()).collect();
        // 2.25 × 100 plus the larger object's estimate (7 bytes, 3 values).
        assert_eq!(conversion_cost(100, &refs), 225 + 5 * 7 + 80 * 3);
    }

    #[test]
    fn the_cgroup_limit_is_read_from_v2_then_v1() {
        let dir = std::env::temp_dir().join(format!("cgroup-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("memory"));
        assert_eq!(cgroup_limit(&dir), None);
        let _ = std::fs::write(
            dir.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        assert_eq!(cgroup_limit(&dir), None, "v1 unlimited");
        let _ = std::fs::write(dir.join("memory/memory.limit_in_bytes"), "268435456\n");
        assert_eq!(cgroup_limit(&dir), Some(256 << 20));
        let _ = std::fs::write(dir.join("memory.max"), "max\n");
        assert_eq!(cgroup_limit(&dir), None, "v2 unlimited wins");
        let _ = std::fs::write(dir.join("memory.max"), "134217728\n");
        assert_eq!(cgroup_limit(&dir), Some(128 << 20));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
