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
cargo test --workspace --release --no-fail-fast "$@" -- --test-threads=2
