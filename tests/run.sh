#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, conformance and end-to-end
# tests against real PostgreSQL, controller and agent processes.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/prereqs.sh
nexb_prereqs
nexb_test_prereqs
export CARGO_TERM_COLOR=never
# A clean checkout gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL=0
echo ">> cargo fmt --check"
cargo fmt --all -- --check
echo ">> cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo ">> cargo build --bins"
cargo build --workspace --bins -q
echo ">> cargo test"
log=target/test-output.txt
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
# One closing line summing every test binary's result.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
