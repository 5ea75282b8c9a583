#!/bin/bash
# Run every test: unit tests and the root integration tests of the CLI.
# Installs missing dependencies first (STASIS_SKIP_INSTALL=1 skips that).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh
need_root
if [[ ${STASIS_SKIP_INSTALL:-} == 1 ]]; then
	ensure_cargo
else
	install_deps
fi
say "building the test programs"
scripts/build-progs.sh
say "cargo test --workspace --release"
log=$(mktemp /tmp/stasis-test.XXXXXX.log)
set +e
cargo test --workspace --release --no-fail-fast "$@" -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's last line is a crate's doc
# tests, often "0 passed").
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^SKIP:/ { s++ }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
rm -f "$log"
exit "$status"
