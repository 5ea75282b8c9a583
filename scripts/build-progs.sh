#!/bin/bash
# Build the test programs of tests/progs into tests/progs/bin (gitignored).
# Idempotent: a program is rebuilt only when its source or zdtm.h is newer.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/tests/progs"
out="$src/bin"
mkdir -p "$out"
CC=${CC:-gcc}
CFLAGS="-O2 -g -pthread -Wall -Wno-format-truncation"

build() { # name extra-flags...
	local name=$1; shift
	local bin="$out/$name"
	if [[ -x $bin && $bin -nt $src/$name.c && $bin -nt $src/zdtm.h ]]; then
		return 0
	fi
	echo "build-progs: $name"
	$CC $CFLAGS "$@" -o "$bin.tmp" "$src/$name.c" -lrt
	mv -f "$bin.tmp" "$bin"
}

for c in "$src"/*.c; do
	name=$(basename "$c" .c)
	case $name in
	threads_avx) build "$name" -mavx ;;
	*) build "$name" ;;
	esac
done
