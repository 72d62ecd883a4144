#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test target
# (unit, property, integration, fuzz-style and benchmark smoke runs).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
