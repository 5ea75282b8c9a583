#!/bin/bash
# Prepare a fresh Debian 12 machine (as root): install dependencies, build
# Stasis in release mode and the test programs, then show a short demo:
# a counter is checkpointed, stays stopped, and is restored where it was.
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
demo=$(mktemp -d /tmp/stasis-demo.XXXXXX)
pid=
cleanup() {
	[[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
	rm -rf "$demo"
}
trap cleanup EXIT

say "demo: a counter writing to $demo/counter.log"
setsid sh -c 'i=0; while true; do echo $i; i=$(expr $i + 1); sleep 1; done' \
	>"$demo/counter.log" 2>&1 </dev/null &
pid=$!
disown "$pid" # the dump kills it: no "Killed" notice from this shell
sleep 3.5
echo "    log: $(tr '\n' ' ' <"$demo/counter.log")"

say "stasis process dump $pid --images $demo/images"
"$stasis" --log-level info process dump "$pid" --images "$demo/images"
sleep 2
echo "    log 2 s after the dump (stopped): $(tr '\n' ' ' <"$demo/counter.log")"

say "stasis process restore --images $demo/images --detach"
"$stasis" --log-level info process restore --images "$demo/images" --detach --pidfile "$demo/pid"
pid=$(cat "$demo/pid")
sleep 3.5
echo "    log after restore (continues): $(tr '\n' ' ' <"$demo/counter.log")"
kill -9 "$pid" 2>/dev/null || true
pid=
say "setup done; run the tests with: ./scripts/test.sh"
