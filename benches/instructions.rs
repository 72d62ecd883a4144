//! Instructions and allocations per request, deterministic: the pure core
//! (decode → rules → encode) on the workload requests of `benches/core.rs`,
//! counted by `valgrind --tool=callgrind` inside [`measured`] only
//! (`--toggle-collect`), and allocations counted by this binary's own
//! allocator. The same binary and input give the same counts run after run,
//! whatever else the machine does; `scripts/instructions.sh` runs it and
//! prints the table BENCHMARKS.md keeps per commit.
//!
//!   cargo bench --bench instructions -- list            # the cases
//!   cargo bench --bench instructions -- allocs          # allocations per op, natively
//!   valgrind --tool=callgrind --toggle-collect='*measured*' \
//!     target/release/deps/instructions-* run CASE N     # N ops under callgrind

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use agentic_webhook::admission::Policy;
use agentic_webhook::testkit::core::{convert, mutate, policy, validate};
use agentic_webhook::testkit::workload;

/// The system allocator, counting.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[derive(Clone, Copy)]
enum Op {
    Mutate,
    Validate,
    MutateValidate,
    Convert,
}

struct Case {
    name: &'static str,
    op: Op,
    body: Vec<u8>,
    /// Objects per request (conversion counts per object).
    per: u64,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (label, body) in [
        ("create_legacy", workload::create_legacy(1)),
        ("update_running_denied", workload::update_running_denied(1)),
        ("status_update", workload::status_update(1)),
    ] {
        for (suffix, op) in [
            ("mutate", Op::Mutate),
            ("validate", Op::Validate),
            ("mutate+validate", Op::MutateValidate),
        ] {
            out.push(Case {
                name: leak(format!("{suffix}/{label}")),
                op,
                body: body.clone(),
                per: 1,
            });
        }
    }
    for n in [1u64, 500] {
        out.push(Case {
            name: leak(format!("convert/{n}")),
            op: Op::Convert,
            body: workload::conversion_review(n as usize),
            per: n,
        });
    }
    out
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn once(p: &Policy, case: &Case) -> usize {
    match case.op {
        Op::Mutate => mutate(p, &case.body).len(),
        Op::Validate => validate(p, &case.body).len(),
        Op::MutateValidate => mutate(p, &case.body).len() + validate(p, &case.body).len(),
        Op::Convert => convert(&case.body).len(),
    }
}

/// The only code callgrind counts (`--toggle-collect='*measured*'`).
#[inline(never)]
fn measured(p: &Policy, case: &Case, n: u64) -> usize {
    (0..n).map(|_| once(p, black_box(case))).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; ignore flags.
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let p = policy();
    let cases = cases();
    match args.as_slice() {
        ["list"] => {
            for c in &cases {
                println!("{} {} {}", c.name, c.body.len(), c.per);
            }
        }
        ["run", name, n] => {
            let Some(case) = cases.iter().find(|c| c.name == *name) else {
                eprintln!("instructions: no case {name}");
                std::process::exit(2);
            };
            let n: u64 = n.parse().unwrap_or(1);
            // Warm (lazy statics, first allocations) outside the count.
            black_box(once(&p, case));
            black_box(measured(&p, case, n));
        }
        [] | ["allocs"] => {
            println!("case,bytes,per,allocs_per_op,alloc_bytes_per_op");
            for c in &cases {
                black_box(once(&p, c));
                let n = 20u64;
                let (a0, b0) = (
                    ALLOCS.load(Ordering::Relaxed),
                    BYTES.load(Ordering::Relaxed),
                );
                black_box(measured(&p, c, n));
                let (a1, b1) = (
                    ALLOCS.load(Ordering::Relaxed),
                    BYTES.load(Ordering::Relaxed),
                );
                let ops = n * c.per;
                println!(
                    "{},{},{},{:.1},{:.0}",
                    c.name,
                    c.body.len(),
                    c.per,
                    (a1 - a0) as f64 / ops as f64,
                    (b1 - b0) as f64 / ops as f64
                );
            }
        }
        _ => {
            eprintln!("usage: instructions [list | allocs | run CASE N]");
            std::process::exit(2);
        }
    }
}
