#!/bin/bash
# Install Stasis as `criu` for runc, crun and podman: a symlink
# /usr/local/sbin/criu -> the release build of stasis (/usr/local/sbin comes
# before /usr/sbin, where Debian's criu lives, in root's PATH).
#   scripts/install-criu.sh            # install (builds stasis if needed)
#   scripts/install-criu.sh --remove   # remove the symlink
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"
need_root
link=/usr/local/sbin/criu
if [[ ${1:-} == --remove ]]; then
	if [[ -L $link ]]; then rm -f "$link"; say "removed $link"; fi
	exit 0
fi
stasis=$root/target/release/stasis
if [[ ! -x $stasis ]]; then
	ensure_cargo
	(cd "$root" && cargo build --release --quiet -p stasis)
fi
if [[ -e $link && ! -L $link ]]; then
	echo "$link exists and is not a symlink; not touching it" >&2
	exit 1
fi
ln -sfn "$stasis" "$link"
hash -r
say "$(criu --version | head -1) at $(command -v criu) (stasis)"
