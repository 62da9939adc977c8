#!/usr/bin/env bash
# Crash loop: kills the real binary with SIGKILL at random moments under
# concurrent Jivo write load, CYCLES times (default 50), restarts it, and
# checks every acknowledged delivery against the database. Prints the counts.
# CRASH_SEED=N replays the kill moments of an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."

cycles="${1:-50}"
CRASH_CYCLES="$cycles" exec cargo test --test api crash:: -- --nocapture --test-threads 1
