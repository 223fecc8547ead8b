#!/usr/bin/env bash
# The end-to-end benchmark (release build). Arguments go to nexb-bench:
#   --scale N          pgbench scale (default 100)
#   --invoice-rows R   rows of the invoice dataset (default 4000000, about 1 GB)
#   --only pgbench|invoices|rss|rtt|load (rss: one full backup and one restore of pgbench,
#     peak RSS; rtt: no-change backups of pgbench on loopback and at 50 ms RTT, alternating;
#     load: pgbench TPC-B alone and beside backups by a normal and a low_priority agent)
# Prints markdown tables; record them in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/prereqs.sh
nexb_prereqs
nexb_bench_prereqs
cargo build --release --workspace --bins -q
exec "${CARGO_TARGET_DIR:-target}/release/nexb-bench" "$@"
