#!/bin/bash
# Prepare a fresh Debian 12 machine (as root): install dependencies, build
# Stasis in release mode and the test programs, then show a short demo:
# a container running a counter is checkpointed, stays stopped, and is
# restored where it was: its log goes on from the same number.
# Idempotent: run it again at any time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh
need_root
install_deps

say "building the workspace (release)"
cargo build --workspace --release --quiet
say "building the test programs"
scripts/build-progs.sh

stasis="$root/target/release/stasis"
say "building the test images (busybox, nginx) from Debian packages"
bash tests/fixtures/build-images.sh >/dev/null

# The demo uses a store of its own, removed at the end.
demo=$(mktemp -d /tmp/stasis-demo.XXXXXX)
st=("$stasis" --root "$demo/root" --runroot "$demo/run")
cleanup() {
	"${st[@]}" rm -f counter >/dev/null 2>&1 || true
	rm -rf "$demo"
}
trap cleanup EXIT
log() { "${st[@]}" logs counter | tr '\n' ' '; }

say "demo: a counter in a container"
"${st[@]}" import target/fixtures/busybox.tar busybox >/dev/null
"${st[@]}" run -d --name counter busybox \
	sh -c 'i=0; while true; do echo $i; i=$(expr $i + 1); sleep 1; done' >/dev/null
sleep 3.5
echo "    stasis logs counter: $(log)"

say "stasis container checkpoint counter"
"${st[@]}" container checkpoint counter >/dev/null
sleep 2
echo "    2 s later, stopped: $(log)"
"${st[@]}" ps -a

say "stasis container restore counter"
"${st[@]}" container restore counter >/dev/null
sleep 3.5
echo "    after restore, it goes on: $(log)"
say "setup done; run the tests with: ./scripts/test.sh"
