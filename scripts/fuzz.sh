#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and prints one line each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
#
# Needs `cargo install cargo-fuzz`. cargo-fuzz passes nightly-only flags to
# rustc; RUSTC_BOOTSTRAP=1 lets a stable toolchain accept them. The corpus
# grows in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>, which come
# from tests/fixtures); crashes land in fuzz/artifacts/<target>. Exits
# non-zero when any target found a crash.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

targets=(jivo rocketchat livechat identity)
# One build for all targets; debug assertions catch overflow in the parsers.
cargo fuzz build --debug-assertions

failed=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="$(mktemp)"
    status=0
    cargo fuzz run --debug-assertions "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')"
    corpus="$(find "corpus/$target" -type f | wc -l)"
    crashes="$(find "artifacts/$target" -type f | wc -l)"
    if [ "$status" -ne 0 ]; then
        failed=1
        verdict="CRASH (exit $status)"
        grep -m 5 -E 'panicked at|ERROR: libFuzzer|Test unit written' "$log" | sed "s/^/    $target: /" || true
    else
        verdict="ok"
    fi
    summary+=("$(printf '%-11s %-16s runs=%-10s cov=%-6s corpus=%-6s artifacts=%s' \
        "$target" "$verdict" "$runs" "$cov" "$corpus" "$crashes")")
    rm -f "$log"
done

echo "fuzz: ${seconds}s per target"
printf '%s\n' "${summary[@]}"
exit "$failed"
