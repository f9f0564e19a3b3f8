#!/usr/bin/env bash
# Fault campaign, long profile (issue #17): RUNS seeded runs of the same harness as the short
# profile in tests/faults.rs (tests/common/campaign.rs). Each run starts three sites as
# processes (site-b on S3, the others on fs), drives a mixed workload from WRITERS clients for
# LOAD_SECS while faults are injected at random times from the run's seed (kill -9 and restart,
# SIGTERM under load, links dropped, slowed, reset mid-body, one-way partitions, S3 outage,
# slow and resetting S3, one name written at two partitioned sites), lets the mesh settle,
# runs one Backbeat retry pass, stops the sites and checks the history against their stores.
# Prints one line per run and, at the end, the table (runs, operations, faults by kind,
# violations). A run with violations keeps the site logs under $TMPDIR/mirrorgate-faults/.
#
# Usage: loadtest/faults.sh
# Environment (all optional):
#   RUNS=200  SEED_START=1  LOAD_SECS=12  WRITERS=4  SETTLE_SECS=60
#   DELETE_ANYWHERE=0: delete only where the version was written (default 1: at any site
#     holding it, which makes DELETE orders overtake CREATE orders at third sites)
#   BUDGET_SECS=N: start no new run after N seconds (the table covers the runs done)
#   One seed again: MIRRORGATE_FAULT_SEED=N cargo test --release --test faults short_fault
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export MIRRORGATE_FAULT_RUNS="${RUNS:-200}"
export MIRRORGATE_FAULT_SEED_START="${SEED_START:-1}"
export MIRRORGATE_FAULT_LOAD_SECS="${LOAD_SECS:-12}"
export MIRRORGATE_FAULT_WRITERS="${WRITERS:-4}"
export MIRRORGATE_FAULT_SETTLE_SECS="${SETTLE_SECS:-60}"
export MIRRORGATE_FAULT_DELETE_ANYWHERE="${DELETE_ANYWHERE:-1}"
[ -n "${BUDGET_SECS:-}" ] && export MIRRORGATE_FAULT_BUDGET_SECS="$BUDGET_SECS"
LOG="${LOG:-$ROOT/target/faults-long.log}"

echo "[faults] $MIRRORGATE_FAULT_RUNS runs from seed $MIRRORGATE_FAULT_SEED_START, log in $LOG" >&2
cargo test --release --test faults long_profile -- --ignored --nocapture --test-threads 1 \
    2>&1 | tee "$LOG" | grep -E '^(seed=|  VIOLATION|\||test result|time budget)' || true
grep -q 'test result: ok' "$LOG"
