#!/usr/bin/env bash
# Builds every fuzz target once, then for each target replays its checked-in corpus
# (fuzz/corpus/<target>) and fuzzes it for a few more seconds. What CI runs (tests/run.sh,
# stage "fuzz"); for a long run of one target see README.md, "Fuzzing".
#
#   fuzz/ci.sh [SECONDS]        SECONDS of fuzzing per target after the replay (default 3)
#
# Needs cargo-fuzz on PATH (`cargo fuzz`). Stable rustc: cargo-fuzz passes it nightly-only
# flags, so this sets RUSTC_BOOTSTRAP=1 for the build (and nothing else). Targets are built
# with optimizations, debug assertions and overflow checks, and without a sanitizer: keyring
# forbids unsafe code, so AddressSanitizer would only slow the search down. A crashing input is
# kept under target/fuzz-artifacts/<target>/ and the script exits 1, naming it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
SECONDS_PER_TARGET=${1:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/../target}/fuzz
BIN=$TARGET_DIR/x86_64-unknown-linux-gnu/release
ARTIFACTS=$TARGET_DIR/../fuzz-artifacts

# cargo fuzz has no --locked: check first that fuzz/Cargo.lock is complete and current.
cargo metadata --locked --format-version 1 >/dev/null
RUSTC_BOOTSTRAP=1 cargo fuzz build -O -a -s none --target-dir "$TARGET_DIR"

failed=()
for t in $(cargo fuzz list); do
    mkdir -p "$ARTIFACTS/$t"
    scratch=$(mktemp -d)
    n=$(find "corpus/$t" -type f | wc -l)
    # Replay: every checked-in input once. Then fuzz, writing new inputs to a scratch dir so
    # the checked-in corpus stays as it is.
    if "$BIN/$t" -runs=0 -artifact_prefix="$ARTIFACTS/$t/" "corpus/$t" >"$scratch.log" 2>&1 \
        && "$BIN/$t" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
            -artifact_prefix="$ARTIFACTS/$t/" "$scratch" "corpus/$t" >>"$scratch.log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch.log" | tail -n 1)
        printf 'ok      %-20s %4d corpus inputs replayed, %s runs in %ss\n' "$t" "$n" "${runs:-?}" \
            "$SECONDS_PER_TARGET"
    else
        printf 'FAILED  %-20s (crash input under %s)\n' "$t" "$ARTIFACTS/$t/"
        tail -n 40 "$scratch.log"
        failed+=("$t")
    fi
    rm -rf "$scratch" "$scratch.log"
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: ${#failed[@]} target(s) crashed: ${failed[*]}"
    exit 1
fi
echo "fuzz: every target replayed its corpus and ran ${SECONDS_PER_TARGET}s without a crash"
