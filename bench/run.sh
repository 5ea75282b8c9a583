#!/usr/bin/env bash
# Stasis benchmark: dump/restore wall times of `stasis process` and CRIU on
# the same machine in the same run, beside the kernel's own bandwidth limits.
#
#   bench/run.sh            # as root: print the results (markdown) to stdout
#   bench/run.sh --write    # and rewrite the results section of BENCHMARKS.md
#
# Environment:
#   BENCH_ITERS=10        iterations per scenario (median and min are reported)
#   BENCH_WARMUP=1        untimed iterations first (they also check the restore)
#   BENCH_MEM_MIB=1024    size of the memory scenario
#   BENCH_SCENARIOS="limits counter nginx run memory ctr ctr_tcp predump criu_dropin"
#   BENCH_TOOLS="stasis criu"  (in `ctr` and `ctr_tcp`, criu stands for its peer
#                         podman + runc + CRIU; "podman" selects that peer alone)
#   BENCH_TARGETS="tmpfs tmpfs_huge disk"   where the memory scenario's images go
#   BENCH_NO_BUILD=1      do not run `cargo build --release` first
#   STASIS=PATH           stasis binary (default target/release/stasis)
#   CRIU=PATH             criu binary (default /opt/criu-src/criu/criu; CRIU
#                         4.x built from source, see BENCHMARKS.md)
#   BENCH_WORK=DIR        scratch dir on a disk file system (default /var/tmp/stasis-bench)
#
# Every process it starts is killed on exit: the script runs under
# bench/subreaper.c, which also reaps orphans at once (so a dumped PID is free
# for the restore that follows) and kills whatever is left at the end.
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
ITERS=${BENCH_ITERS:-10}
WARMUP=${BENCH_WARMUP:-1}
MEM_MIB=${BENCH_MEM_MIB:-1024}
SCENARIOS=${BENCH_SCENARIOS:-limits counter nginx run memory ctr ctr_tcp predump criu_dropin}
TOOLS=${BENCH_TOOLS:-stasis criu}
TARGETS=${BENCH_TARGETS:-tmpfs tmpfs_huge disk}
STASIS=${STASIS:-$REPO/target/release/stasis}
CRIU=${CRIU:-/opt/criu-src/criu/criu}
WORK=${BENCH_WORK:-/var/tmp/stasis-bench}
BIN=$WORK/bin
LOGS=$WORK/logs
WRITE=0

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
for a in "$@"; do
	case $a in
	--write) WRITE=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument $a" >&2; usage >&2; exit 2 ;;
	esac
done
if [[ $(id -u) -ne 0 ]]; then
	echo "run.sh: run as root" >&2
	exit 1
fi
note() { printf '==> %s\n' "$*" >&2; }
# The container peer: Debian's podman with runc (BENCH_NO_INSTALL=1 skips).
if [[ -z ${STASIS_BENCH_REAPED:-} && -z ${BENCH_NO_INSTALL:-} ]] && ! command -v podman >/dev/null; then
	note "installing the peer: podman + runc (apt)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null 2>&1 || note "podman could not be installed"
fi

# ---- stage 1: build the helpers and the binary, then re-exec under the subreaper
if [[ -z ${STASIS_BENCH_REAPED:-} ]]; then
	mkdir -p "$BIN" "$LOGS"
	for p in memhog vmread subreaper; do
		gcc -O2 -Wall -Wextra -o "$BIN/$p" "$BENCH_DIR/$p.c"
	done
	if [[ -z ${BENCH_NO_BUILD:-} ]]; then
		cargo=$(command -v cargo || true)
		for c in "$HOME/.cargo/bin/cargo" ${SUDO_USER:+"/home/$SUDO_USER/.cargo/bin/cargo"}; do
			[[ -z $cargo && -x $c ]] && cargo=$c
		done
		if [[ -z $cargo ]]; then
			note "cargo not found: using the existing $STASIS, if any"
		else
			note "cargo build --release"
			build=(bash -c 'cd "$1" && "$2" build --release -q' _ "$REPO" "$cargo")
			# Build as the invoking user so target/ does not become root's.
			if [[ -n ${SUDO_USER:-} && $SUDO_USER != root && $(stat -c %U "$REPO") == "$SUDO_USER" ]]; then
				build=(sudo -u "$SUDO_USER" "${build[@]}")
			fi
			if ! "${build[@]}" >"$LOGS/cargo-build.log" 2>&1; then
				note "cargo build --release failed (see $LOGS/cargo-build.log): using the existing binary, if any"
			fi
		fi
	fi
	export STASIS_BENCH_REAPED=1
	exec "$BIN/subreaper" bash ${BENCH_TRACE:+-x} "$0" "$@"
fi

# ---- stage 2: the benchmark (we are under the subreaper)
# Close inherited fds (3.., not bash's own 255) so the processes we dump hold
# no pipes to whoever started us.
for fd in /proc/$$/fd/*; do
	fd=${fd##*/}
	if ((fd > 2 && fd != 255)); then eval "exec $fd>&-" 2>/dev/null || true; fi
done
TMPFS=$WORK/tmpfs
TMPFS_HUGE=$WORK/tmpfs-huge
DISK=$WORK/disk
PIDFILE=$WORK/restored.pid
RESULTS=$WORK/results.md
declare -a LIVE=() # pids (= pgids: all started with setsid) to kill on exit
CTR_USED="" # tools whose containers/images the ctr scenario may have left

cleanup() {
	local p
	[[ -z $CTR_USED ]] || ctr_cleanup
	for p in "${LIVE[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
	sleep 0.1
	for m in "$TMPFS" "$TMPFS_HUGE"; do mountpoint -q "$m" && umount -l "$m"; done
	rm -rf "$DISK" "$PIDFILE"
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$TMPFS" "$TMPFS_HUGE" "$DISK" "$LOGS"
tmpfs_size=$((MEM_MIB * 2 + 512))m
mountpoint -q "$TMPFS" || mount -t tmpfs -o "size=$tmpfs_size,mode=0755" stasis-bench "$TMPFS"
mountpoint -q "$TMPFS_HUGE" || mount -t tmpfs -o "size=$tmpfs_size,mode=0755,huge=always" stasis-bench-huge "$TMPFS_HUGE"
target_dir() {
	case $1 in
	tmpfs) echo "$TMPFS" ;; tmpfs_huge) echo "$TMPFS_HUGE" ;; disk) echo "$DISK" ;;
	*) echo "run.sh: unknown target $1" >&2; exit 2 ;;
	esac
}
target_label() {
	case $1 in
	tmpfs) echo "tmpfs" ;; tmpfs_huge) echo "tmpfs huge=always" ;; disk) echo "page cache (ext4/disk)" ;;
	esac
}
[[ $(stat -f -c %T "$DISK") != tmpfs ]] || note "warning: $DISK is on tmpfs, not a disk file system"

now_us() { echo "${EPOCHREALTIME/./}"; } # only for non-timed use
wait_for() { # FILE REGEX TIMEOUT_S
	local deadline=$((${EPOCHREALTIME/./} + $3 * 1000000))
	until grep -qE "$2" "$1" 2>/dev/null; do
		((${EPOCHREALTIME/./} < deadline)) || return 1
		sleep 0.005
	done
}
wait_gone() { # PID: until reaped (or a zombie), at most 10 s
	local i
	for ((i = 0; i < 1000; i++)); do
		[[ -e /proc/$1 ]] || return 0
		[[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]] && return 0
		sleep 0.01
	done
}
# spawn OUT CMD...: start CMD in a new session, stdout+stderr to OUT, print its
# PID. It is an orphan at once, so the subreaper reaps it as soon as it dies.
spawn() {
	local out=$1
	shift
	setsid "$@" >"$out" 2>&1 </dev/null &
	echo $!
}
kill_tree() { # PID (a session/group leader)
	kill -KILL -- "-$1" 2>/dev/null || true
	kill -KILL "$1" 2>/dev/null || true
	wait_gone "$1"
}
forget() { # PID
	local keep=() p
	for p in "${LIVE[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	LIVE=("${keep[@]}")
}

# ---- tools
STASIS_STATE="" # empty = usable, else why not
CRIU_STATE=""
CRIU_VERSION=""
if [[ ! -x $STASIS ]]; then
	STASIS_STATE="pending: no binary at $STASIS"
elif ! "$STASIS" process dump --help >/dev/null 2>&1; then
	STASIS_STATE="pending: \`stasis process dump\` not available yet"
fi
if [[ -x $CRIU ]]; then
	CRIU_VERSION=$("$CRIU" --version 2>/dev/null | awk '/^Version/{print $2}')
	"$CRIU" check >"$LOGS/criu-check.log" 2>&1 || CRIU_STATE="failed: criu check (see $LOGS/criu-check.log)"
else
	CRIU_STATE="not available (no $CRIU; set CRIU=PATH)"
fi
[[ " $TOOLS " == *" stasis "* ]] || STASIS_STATE="not run (BENCH_TOOLS)"
[[ " $TOOLS " == *" criu "* ]] || CRIU_STATE="not run (BENCH_TOOLS)"
[[ -z $STASIS_STATE ]] || note "stasis: $STASIS_STATE"
[[ -z $CRIU_STATE ]] && note "criu: $CRIU ($CRIU_VERSION)" || note "criu: $CRIU_STATE"

tool_state() { if [[ $1 == stasis ]]; then echo "$STASIS_STATE"; else echo "$CRIU_STATE"; fi; }
tool_name() { if [[ $1 == stasis ]]; then echo "stasis"; else echo "CRIU ${CRIU_VERSION:-}"; fi; }

# tool_dump TOOL PID DIR [FLAGS...], tool_restore TOOL DIR [FLAGS...]:
# FLAGS (e.g. --tcp-established) are passed to both tools as they are.
tool_dump() {
	local tool=$1 pid=$2 dir=$3
	shift 3
	case $tool in
	stasis) "$STASIS" process dump "$pid" --images "$dir" "$@" ;;
	criu) "$CRIU" dump -t "$pid" -D "$dir" --shell-job -o dump.log "$@" ;;
	esac
}
tool_restore() {
	local tool=$1 dir=$2
	shift 2
	rm -f "$PIDFILE"
	case $tool in
	stasis) "$STASIS" process restore --images "$dir" --detach --pidfile "$PIDFILE" "$@" ;;
	criu) "$CRIU" restore -D "$dir" --shell-job -d -o restore.log --pidfile "$PIDFILE" "$@" ;;
	esac
}
fail_reason() { # TOOL DIR LOGFILE: one line
	local line=""
	[[ $1 == criu ]] && line=$(grep -h 'Error' "$2"/dump.log "$2"/restore.log 2>/dev/null | grep -v RLIMIT_NOFILE | head -1 || true)
	[[ -n $line ]] || line=$(grep -v -e '^\s*$' -e 'Killed' "$3" 2>/dev/null | tail -1 || true)
	echo "${line:-no message}" | cut -c1-160
}

# ---- statistics: values in microseconds, one per line
stat_ms() { # FILE median|min -> ms with 1 decimal
	sort -g "$1" | awk -v what="$2" '{v[NR]=$1} END {
		if (NR == 0) { print "-"; exit }
		if (what == "min") x = v[1]
		else x = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
		printf "%.1f", x / 1000 }'
}
gbps() { # BYTES MS
	awk -v b="$1" -v ms="$2" 'BEGIN { if (ms == "-" || ms <= 0) print "-"; else printf "%.2f", b / (ms / 1000) / 1e9 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "" || b <= 0) print "-"; else printf "%.2f", a / b }'; }

declare -A R # results: R[key] = value or "failed: ..." / state

# ---- scenario: limits
run_limits() {
	note "limits: vmread ($MEM_MIB MiB)"
	local out
	out=$("$BIN/vmread" --mib "$MEM_MIB" --reps 3 --write "tmpfs:$TMPFS" --write "tmpfs_huge:$TMPFS_HUGE" --write "disk:$DISK")
	echo "$out" >"$LOGS/vmread.txt"
	while read -r k v; do R[lim_$k]=$v; done <<<"$out"
}

# ---- scenario: counter
COUNTER_SH='i=0; while true; do echo $i; i=$(expr $i + 1); sleep 1; done'
run_counter() { # TOOL
	local tool=$1 d=$DISK/counter-$1 log=$LOGS/counter-$1.log i t0 t1 t2 t3 p rp
	local dfile=$WORK/counter-$tool-dump.us rfile=$WORK/counter-$tool-restore.us
	: >"$dfile"; : >"$rfile"; : >"$log"
	note "counter: $(tool_name "$tool") x $ITERS"
	for ((i = 1; i <= WARMUP + ITERS; i++)); do
		rm -rf "$d"; mkdir -p "$d/img"
		p=$(spawn "$d/out" sh -c "$COUNTER_SH"); LIVE+=("$p")
		wait_for "$d/out" '^0$' 5 || { R[counter_$tool]="failed: counter did not start"; kill_tree "$p"; return; }
		sleep 0.05
		t0=${EPOCHREALTIME/./}
		if ! tool_dump "$tool" "$p" "$d/img" >>"$log" 2>&1; then
			R[counter_$tool]="failed: dump: $(fail_reason "$tool" "$d/img" "$log")"; kill_tree "$p"; return
		fi
		t1=${EPOCHREALTIME/./}
		wait_gone "$p"; forget "$p"
		if [[ -e /proc/$p ]]; then R[counter_$tool]="failed: dump left the process running"; kill_tree "$p"; return; fi
		t2=${EPOCHREALTIME/./}
		if ! tool_restore "$tool" "$d/img" >>"$log" 2>&1; then
			R[counter_$tool]="failed: restore: $(fail_reason "$tool" "$d/img" "$log")"; return
		fi
		t3=${EPOCHREALTIME/./}
		rp=$(cat "$PIDFILE" 2>/dev/null || true)
		if [[ -z $rp ]] || ! kill -0 "$rp" 2>/dev/null; then
			R[counter_$tool]="failed: restore: no live process in --pidfile"; return
		fi
		LIVE+=("$rp")
		if ((i == 1)); then # the restored counter goes on from where it was
			local before after
			before=$(tail -n1 "$d/out"); sleep 1.2; after=$(tail -n1 "$d/out")
			if ! ((after > before)); then
				R[counter_$tool]="failed: restored counter did not continue ($before -> $after)"; kill_tree "$rp"; return
			fi
		fi
		kill_tree "$rp"; forget "$rp"
		if ((i > WARMUP)); then echo $((t1 - t0)) >>"$dfile"; echo $((t3 - t2)) >>"$rfile"; fi
	done
	rm -rf "$d"
	R[counter_$tool]=ok
}

# ---- scenario: memory
run_memory() { # TOOL TARGET
	local tool=$1 target=$2 dir d log i t0 t1 t2 t3 p rp bytes
	dir=$(target_dir "$target"); d=$dir/mem-$tool; log=$LOGS/memory-$tool-$target.log
	local key=mem_${tool}_$target dfile=$WORK/mem-$tool-$target-dump.us rfile=$WORK/mem-$tool-$target-restore.us
	: >"$dfile"; : >"$rfile"; : >"$log"
	note "memory: $(tool_name "$tool") -> $(target_label "$target") x $ITERS"
	for ((i = 1; i <= WARMUP + ITERS; i++)); do
		rm -rf "$d"; mkdir -p "$d/img"
		p=$(spawn "$WORK/memhog.out" "$BIN/memhog" "$MEM_MIB"); LIVE+=("$p")
		wait_for "$WORK/memhog.out" '^READY' 60 || { R[$key]="failed: memhog did not start"; kill_tree "$p"; return; }
		t0=${EPOCHREALTIME/./}
		if ! tool_dump "$tool" "$p" "$d/img" >>"$log" 2>&1; then
			R[$key]="failed: dump: $(fail_reason "$tool" "$d/img" "$log")"; kill_tree "$p"; return
		fi
		t1=${EPOCHREALTIME/./}
		wait_gone "$p"; forget "$p"
		bytes=$(find "$d/img" -name 'pages-*.img' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
		((bytes > 0)) || bytes=$(du -sb "$d/img" | awk '{print $1}')
		t2=${EPOCHREALTIME/./}
		if ! tool_restore "$tool" "$d/img" >>"$log" 2>&1; then
			R[$key]="failed: restore: $(fail_reason "$tool" "$d/img" "$log")"; return
		fi
		t3=${EPOCHREALTIME/./}
		rp=$(cat "$PIDFILE" 2>/dev/null || true)
		if [[ -z $rp ]] || ! kill -0 "$rp" 2>/dev/null; then
			R[$key]="failed: restore: no live process in --pidfile"; return
		fi
		LIVE+=("$rp")
		if ((i == 1)); then # every page came back
			kill -USR1 "$rp"
			if ! wait_for "$WORK/memhog.out" '^VERIFY' 20 || ! grep -q '^VERIFY OK' "$WORK/memhog.out"; then
				R[$key]="failed: restored memory: $(grep '^VERIFY' "$WORK/memhog.out" || echo 'no answer to SIGUSR1')"; kill_tree "$rp"; return
			fi
		fi
		kill_tree "$rp"; forget "$rp"
		if ((i > WARMUP)); then echo $((t1 - t0)) >>"$dfile"; echo $((t3 - t2)) >>"$rfile"; fi
		R[${key}_bytes]=$bytes
		rm -rf "$d"
	done
	R[$key]=ok
}

# ---- scenario: nginx (master + worker, a private config on 127.0.0.1),
# plain and with one established keep-alive connection (--tcp-established)
NGINX_PORT=18097
run_nginx() { # TOOL plain|tcp
	local tool=$1 mode=$2 d=$DISK/nginx-$1-$2 log=$LOGS/nginx-$1-$2.log i t0 t1 t2 t3 p rp c flag=()
	local key=nginx_${tool}_$mode dfile=$WORK/nginx-$tool-$mode-dump.us rfile=$WORK/nginx-$tool-$mode-restore.us
	[[ $mode == tcp ]] && flag=(--tcp-established)
	: >"$dfile"; : >"$rfile"; : >"$log"
	command -v nginx >/dev/null || { R[$key]="failed: nginx is not installed"; return 0; }
	note "nginx ($mode): $(tool_name "$tool") x $ITERS"
	for ((i = 1; i <= WARMUP + ITERS; i++)); do
		rm -rf "$d"; mkdir -p "$d/img"; echo "hello from nginx" >"$d/index.html"
		cat >"$d/nginx.conf" <<-CONF
			daemon off; worker_processes 1; pid $d/nginx.pid; error_log $d/error.log;
			events { worker_connections 64; }
			http { access_log off; server { listen 127.0.0.1:$NGINX_PORT; root $d; } }
		CONF
		p=$(spawn "$d/out" nginx -c "$d/nginx.conf" -p "$d"); LIVE+=("$p")
		for _ in $(seq 200); do curl -sf "http://127.0.0.1:$NGINX_PORT/" >/dev/null 2>&1 && break; sleep 0.02; done
		c=""
		if [[ $mode == tcp ]]; then
			c=$(spawn "$d/client" python3 "$BENCH_DIR/keepalive.py" "$NGINX_PORT" "$d/go"); LIVE+=("$c")
			wait_for "$d/client" '^READY$' 5 || { R[$key]="failed: client did not connect"; kill_tree "$p"; kill_tree "$c"; return 0; }
		fi
		t0=${EPOCHREALTIME/./}
		if ! (cd "$d/img" && tool_dump "$tool" "$p" "$d/img" "${flag[@]}") >>"$log" 2>&1; then
			R[$key]="failed: dump: $(fail_reason "$tool" "$d/img" "$log")"; kill_tree "$p"; [[ -n $c ]] && kill_tree "$c"; return 0
		fi
		t1=${EPOCHREALTIME/./}
		wait_gone "$p"; forget "$p"
		t2=${EPOCHREALTIME/./}
		if ! (cd "$d/img" && tool_restore "$tool" "$d/img" "${flag[@]}") >>"$log" 2>&1; then
			R[$key]="failed: restore: $(fail_reason "$tool" "$d/img" "$log")"; [[ -n $c ]] && kill_tree "$c"; return 0
		fi
		t3=${EPOCHREALTIME/./}
		rp=$(cat "$PIDFILE" 2>/dev/null || true); LIVE+=("$rp")
		if ((i == 1)); then
			if ! curl -sf "http://127.0.0.1:$NGINX_PORT/" | grep -q hello; then
				R[$key]="failed: restored nginx does not answer"; kill_tree "$rp"; [[ -n $c ]] && kill_tree "$c"; return 0
			fi
			if [[ $mode == tcp ]]; then
				touch "$d/go"
				# The client's third line is the answer on the kept socket.
				for _ in $(seq 500); do (($(wc -l <"$d/client") >= 3)) && break; sleep 0.01; done
				if ! grep -q 'HTTP/1.1 200' <(tail -n1 "$d/client"); then
					R[$key]="failed: the kept connection got: $(tail -n1 "$d/client")"; kill_tree "$rp"; kill_tree "$c"; return 0
				fi
			fi
		fi
		kill_tree "$rp"; forget "$rp"
		[[ -n $c ]] && { kill_tree "$c"; forget "$c"; }
		if ((i > WARMUP)); then echo $((t1 - t0)) >>"$dfile"; echo $((t3 - t2)) >>"$rfile"; fi
	done
	rm -rf "$d"
	R[$key]=ok
}
# ---- scenario: run (container start): `stasis run -d` of busybox until the
# command returns with the container running; Debian's podman (runc) beside
# it when installed, from the same rootfs tarball.
run_containers() {
	local fx=$REPO/target/fixtures/busybox.tar sroot=$WORK/ctr-root srun=$WORK/ctr-run i t0 t1
	local sfile=$WORK/run-stasis.us pfile=$WORK/run-podman.us log=$LOGS/run.log
	: >"$sfile"; : >"$pfile"; : >"$log"
	if ! bash "$REPO/tests/fixtures/build-images.sh" >>"$log" 2>&1; then R[run_stasis]="failed: fixtures: see $log"; return 0; fi
	local S=("$STASIS" --root "$sroot" --runroot "$srun")
	rm -rf "$sroot" "$srun"
	note "run -d busybox: stasis x $ITERS"
	if ! "${S[@]}" import "$fx" bbench:latest >>"$log" 2>&1; then R[run_stasis]="failed: import: $(tail -n1 "$log")"; return 0; fi
	for ((i = 1; i <= WARMUP + ITERS; i++)); do
		t0=${EPOCHREALTIME/./}
		if ! "${S[@]}" run -d --name "b$i" bbench sleep 1000 >>"$log" 2>&1; then
			R[run_stasis]="failed: run: $(tail -n1 "$log")"; break
		fi
		t1=${EPOCHREALTIME/./}
		((i > WARMUP)) && echo $((t1 - t0)) >>"$sfile"
		"${S[@]}" rm -f "b$i" >>"$log" 2>&1 || true
	done
	[[ ${R[run_stasis]:-} == failed* ]] || R[run_stasis]=ok
	rm -rf "$sroot" "$srun"
	if ! command -v podman >/dev/null; then R[run_podman]="not available: podman is not installed"; return 0; fi
	note "run -d busybox: podman $(podman --version | awk '{print $3}') (runc) x $ITERS"
	podman rmi -f localhost/bbench:latest >>"$log" 2>&1 || true
	if ! podman import "$fx" localhost/bbench:latest >>"$log" 2>&1; then R[run_podman]="failed: import: $(tail -n1 "$log")"; return 0; fi
	for ((i = 1; i <= WARMUP + ITERS; i++)); do
		t0=${EPOCHREALTIME/./}
		if ! podman --runtime runc run -d --name "pb$i" --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
			localhost/bbench sleep 1000 >>"$log" 2>&1; then
			R[run_podman]="failed: run: $(tail -n1 "$log")"; break
		fi
		t1=${EPOCHREALTIME/./}
		((i > WARMUP)) && echo $((t1 - t0)) >>"$pfile"
		podman rm -f "pb$i" >>"$log" 2>&1 || true
	done
	podman rmi -f localhost/bbench:latest >>"$log" 2>&1 || true
	[[ ${R[run_podman]:-} == failed* ]] || R[run_podman]=ok
}

# ---- scenario: ctr (container checkpoint/restore): nginx from the fixtures'
# rootfs tarball with a published port, checkpointed and restored in place,
# then exported to a .tar.zst, removed and restored from the file; stasis and
# podman (runc, CRIU 4.2 found through PATH) side by side. Only the
# checkpoint and restore commands are timed; after each restore nginx must
# answer on the host port.
CTR_PORT_STASIS=18280
CTR_PORT_PODMAN=18281
CTR_SROOT=$WORK/ctr-stasis-root
CTR_SRUN=$WORK/ctr-stasis-run
CTR_PIMAGE=localhost/stasis-bench-nginx:latest
CTR_PNAME=stasis-bench-web
# podman and runc exec `criu` from PATH, and Debian's criu 3.17 breaks on this
# kernel: podman's commands get this dir (a `criu` symlink to $CRIU) first.
CTR_CRIU_DIR=$WORK/ctr-criu
CTR_CMD=/usr/sbin/nginx # as crates/stasis/tests/containers.rs runs it
# Debian's podman asks runc for RLIMIT_NOFILE 1048576, above root's hard limit
# here (20000), and root lacks CAP_SYS_RESOURCE: runc create fails with
# "error setting rlimit type 7". The `run` scenario passes the same.
CTR_PODMAN_RUN=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
declare -A CTR_STATE=() # tool -> "" (usable) or why not
CTR_PODMAN_VERSION="" # "4.3.1"
CTR_PODMAN_DETAIL=""  # runtime and CRIU it ran with

ctr_state() { # TOOL: empty = usable, else why not
	case $1 in
	stasis)
		if [[ " $TOOLS " != *" stasis "* ]]; then echo "not run (BENCH_TOOLS)"
		elif [[ ! -x $STASIS ]]; then echo "not available: no binary at $STASIS"
		elif ! "$STASIS" container checkpoint --help >/dev/null 2>&1; then
			echo "skipped: stasis container checkpoint not available (\`stasis container checkpoint --help\` fails)"
		fi ;;
	podman)
		if [[ " $TOOLS " != *" criu "* && " $TOOLS " != *" podman "* ]]; then echo "not run (BENCH_TOOLS)"
		elif ! command -v podman >/dev/null; then echo "not available: podman is not installed"
		elif ! command -v runc >/dev/null; then echo "not available: runc is not installed"
		elif [[ ! -x $CRIU ]]; then echo "not available: no CRIU at $CRIU (set CRIU=PATH)"
		fi ;;
	esac
}
ctr_port() { if [[ $1 == stasis ]]; then echo "$CTR_PORT_STASIS"; else echo "$CTR_PORT_PODMAN"; fi; }
ctr_cli() { # TOOL ARGS...: the tool's CLI on the bench's own store / with CRIU 4.2
	local tool=$1
	shift
	case $tool in
	stasis) "$STASIS" --root "$CTR_SROOT" --runroot "$CTR_SRUN" "$@" ;;
	podman) PATH="$CTR_CRIU_DIR:$PATH" podman --runtime runc "$@" ;;
	esac
}
ctr_op() { # TOOL run|rm|checkpoint|restore|export|import|tcprun|tcpcheckpoint|tcprestore [FILE]
	local tool=$1 op=$2 f=${3:-} port
	port=$(ctr_port "$tool")
	case $tool:$op in
	stasis:run) ctr_cli stasis run -d --name web -p "$port:80" nginx "$CTR_CMD" ;;
	stasis:rm) ctr_cli stasis rm -f web ;;
	stasis:checkpoint) ctr_cli stasis container checkpoint web ;;
	stasis:restore) ctr_cli stasis container restore web ;;
	stasis:export) ctr_cli stasis container checkpoint web -e "$f" ;;
	stasis:import) ctr_cli stasis container restore -i "$f" ;;
	stasis:tcprun) ctr_cli stasis run -d --name web -p "$CTR_TCP_PORT_STASIS:80" nginx "$CTR_CMD" ;;
	stasis:tcpcheckpoint) ctr_cli stasis container checkpoint --tcp-established web ;;
	stasis:tcprestore) ctr_cli stasis container restore --tcp-established web ;;
	podman:run) ctr_cli podman run -d --name "$CTR_PNAME" -p "$port:80" "${CTR_PODMAN_RUN[@]}" "$CTR_PIMAGE" "$CTR_CMD" ;;
	podman:rm) ctr_cli podman rm -f -t 0 "$CTR_PNAME" ;;
	podman:checkpoint) ctr_cli podman container checkpoint "$CTR_PNAME" ;;
	podman:restore) ctr_cli podman container restore "$CTR_PNAME" ;;
	podman:export) ctr_cli podman container checkpoint -e "$f" "$CTR_PNAME" ;;
	podman:import) ctr_cli podman container restore -i "$f" ;;
	podman:tcprun) ctr_cli podman run -d --name "$CTR_PNAME" -p "$CTR_TCP_PORT_PODMAN:80" "${CTR_PODMAN_RUN[@]}" "$CTR_PIMAGE" "$CTR_CMD" ;;
	podman:tcpcheckpoint) ctr_cli podman container checkpoint --tcp-established "$CTR_PNAME" ;;
	podman:tcprestore) ctr_cli podman container restore --tcp-established "$CTR_PNAME" ;;
	esac
}
ctr_answers() { # PORT [SECONDS]: nginx's page comes back within SECONDS (default 5)
	local deadline=$((${EPOCHREALTIME/./} + ${2:-5} * 1000000)) page
	while :; do
		page=$(curl -s --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null || true)
		[[ $page == *"hello from stasis nginx"* ]] && return 0
		((${EPOCHREALTIME/./} < deadline)) || return 1
		sleep 0.01
	done
}
ctr_reason() { # LOG: its last message (or CRIU's first error, for podman), one line
	local line="" clog
	# podman names CRIU's log ("log file: PATH"); it goes with the container.
	clog=$(tail -n 20 "$1" 2>/dev/null | grep -o 'log file: [^ "]*\.log' | tail -1 | sed 's/^log file: //' || true)
	if [[ -n $clog && -r $clog ]]; then
		cp "$clog" "$1.criu-${clog##*/}" 2>/dev/null || true
		line=$(grep -h 'Error' "$clog" | grep -v RLIMIT_NOFILE | head -1 || true)
	fi
	[[ -n $line ]] || line=$(grep -v -e '^\s*$' -e '^--- ' "$1" 2>/dev/null | tail -1 || true)
	echo "${line:-no message}" | cut -c1-160
}

# ctr_phase TOOL inplace|export: a fresh container, then WARMUP + ITERS cycles.
ctr_phase() {
	local tool=$1 phase=$2 log=$LOGS/ctr-$1.log f=$DISK/ctr-$1.tar.zst port i t0 t1 t2 t3 a b
	local key=ctr_${tool}_$phase
	port=$(ctr_port "$tool")
	if [[ $phase == inplace ]]; then a=checkpoint b=restore; else a=export b=import; fi
	: >"$WORK/ctr-$tool-$a.us"; : >"$WORK/ctr-$tool-$b.us"
	note "ctr ($([[ $phase == inplace ]] && echo "in place" || echo "export/import")): $tool x $ITERS"
	ctr_op "$tool" rm >>"$log" 2>&1 || true
	echo "--- $phase: run" >>"$log"
	if ! ctr_op "$tool" run >>"$log" 2>&1; then R[$key]="failed: run: $(ctr_reason "$log")"; return 0; fi
	if ! ctr_answers "$port"; then R[$key]="failed: nginx does not answer on :$port after run"; ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0; fi
	for ((i = 1; i <= WARMUP + ITERS; i++)); do
		rm -f "$f"
		echo "--- $phase $i: $a" >>"$log"
		t0=${EPOCHREALTIME/./}
		if ! ctr_op "$tool" "$a" "$f" >>"$log" 2>&1; then
			R[$key]="failed: $a: $(ctr_reason "$log")"; ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0
		fi
		t1=${EPOCHREALTIME/./}
		if ((i == 1)) && ctr_answers "$port" 0; then # it really stopped
			R[$key]="failed: nginx still answers after $a"; ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0
		fi
		if [[ $phase == export ]]; then
			if [[ ! -s $f ]]; then R[$key]="failed: $a wrote no $f"; ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0; fi
			R[${key}_bytes]=$(stat -c %s "$f")
			echo "--- $phase $i: rm" >>"$log"
			if ! ctr_op "$tool" rm >>"$log" 2>&1; then R[$key]="failed: rm: $(ctr_reason "$log")"; return 0; fi
		fi
		echo "--- $phase $i: $b" >>"$log"
		t2=${EPOCHREALTIME/./}
		if ! ctr_op "$tool" "$b" "$f" >>"$log" 2>&1; then
			R[$key]="failed: $b: $(ctr_reason "$log")"; ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0
		fi
		t3=${EPOCHREALTIME/./}
		if ! ctr_answers "$port"; then
			R[$key]="failed: nginx does not answer on :$port after $b (iteration $i)"; ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0
		fi
		if ((i > WARMUP)); then echo $((t1 - t0)) >>"$WORK/ctr-$tool-$a.us"; echo $((t3 - t2)) >>"$WORK/ctr-$tool-$b.us"; fi
	done
	echo "--- $phase: rm" >>"$log"
	ctr_op "$tool" rm >>"$log" 2>&1 || true
	rm -f "$f"
	R[$key]=ok
}

# ctr_prepare SCENARIO TOOL LOG KEY: the tool is usable, the fixtures are built
# and the nginx image imported; else returns 1 with CTR_STATE[TOOL] or R[KEY]
# saying why.
ctr_prepare() {
	local scen=$1 tool=$2 log=$3 key=$4 fx=$REPO/target/fixtures/nginx.tar
	CTR_STATE[$tool]=$(ctr_state "$tool")
	if [[ -n ${CTR_STATE[$tool]} ]]; then note "$scen: $tool: ${CTR_STATE[$tool]}"; return 1; fi
	if ! bash "$REPO/tests/fixtures/build-images.sh" >>"$log" 2>&1; then
		R[$key]="failed: fixtures: see $log"; return 1
	fi
	CTR_USED+=" $tool"
	echo "--- import" >>"$log"
	case $tool in
	stasis)
		ctr_stasis_purge
		if ! ctr_cli stasis import "$fx" nginx >>"$log" 2>&1; then
			R[$key]="failed: import: $(ctr_reason "$log")"; return 1
		fi ;;
	podman)
		ctr_podman_purge
		mkdir -p "$CTR_CRIU_DIR"
		ln -sfn "$CRIU" "$CTR_CRIU_DIR/criu"
		CTR_PODMAN_VERSION=$(podman --version | awk '{print $3}')
		CTR_PODMAN_DETAIL="--runtime runc ($(runc --version | awk 'NR==1{print $3}')), CRIU $(PATH="$CTR_CRIU_DIR:$PATH" criu --version | awk '/^Version/{print $2}') ($CRIU, first in PATH), cgroup manager $(podman info --format '{{.Host.CgroupManager}}' 2>/dev/null || echo '?')"
		note "$scen: podman $CTR_PODMAN_VERSION $CTR_PODMAN_DETAIL"
		if ! podman import --change "CMD [\"$CTR_CMD\"]" "$fx" "$CTR_PIMAGE" >>"$log" 2>&1; then
			R[$key]="failed: import: $(ctr_reason "$log")"; return 1
		fi ;;
	esac
}

run_ctr() { # TOOL
	local tool=$1 log=$LOGS/ctr-$1.log
	: >"$log"
	ctr_prepare ctr "$tool" "$log" "ctr_${tool}_inplace" || return 0
	ctr_phase "$tool" inplace
	ctr_phase "$tool" export
	if [[ $tool == stasis ]]; then ctr_stasis_purge; else ctr_podman_purge; fi
}

# Cleanup (also on exit): our containers, image and store, and, should `rm`
# have missed them, a stasis container's veth and nft rules.
ctr_stasis_purge() {
	local ids id h m
	[[ -x $STASIS ]] || return 0
	ids=$({ ctr_cli stasis ps -a --format json 2>/dev/null || true; cat "$LOGS/ctr-stasis.log" "$LOGS/ctr_tcp-stasis.log" "$LOGS/predump-stasis.log" 2>/dev/null; } |
		grep -oE '[0-9a-f]{64}' | sort -u || true)
	ctr_cli stasis rm -f web >/dev/null 2>&1 || true
	ctr_cli stasis rm -f "$PD_NAME" >/dev/null 2>&1 || true
	for id in $ids; do
		ctr_cli stasis rm -f "$id" >/dev/null 2>&1 || true
		if ip link show "vs${id:0:10}" >/dev/null 2>&1; then ip link del "vs${id:0:10}" 2>/dev/null || true; fi
		for h in $(nft -a list chain ip stasis ports 2>/dev/null | awk -v c="\"stasis:$id\"" 'index($0, c) { print $NF }'); do
			nft delete rule ip stasis ports handle "$h" 2>/dev/null || true
		done
		if nft list chain ip stasis "ctr-$id" >/dev/null 2>&1; then
			nft flush chain ip stasis "ctr-$id" 2>/dev/null || true
			nft delete chain ip stasis "ctr-$id" 2>/dev/null || true
		fi
	done
	for m in $(awk -v a="$CTR_SROOT" -v b="$CTR_SRUN" 'index($5 "/", a "/") == 1 || index($5 "/", b "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	rm -rf --one-file-system "$CTR_SROOT" "$CTR_SRUN" 2>/dev/null || true
	return 0
}
ctr_podman_purge() {
	command -v podman >/dev/null || return 0
	podman rm -f -t 0 "$CTR_PNAME" >/dev/null 2>&1 || true
	podman rmi -f "$CTR_PIMAGE" >/dev/null 2>&1 || true
	podman rm -f -t 0 "$PD_PNAME" >/dev/null 2>&1 || true
	podman rmi -f "$PD_PIMAGE" >/dev/null 2>&1 || true
	rm -rf "$CTR_CRIU_DIR"
}
ctr_cleanup() {
	[[ $CTR_USED != *stasis* ]] || ctr_stasis_purge
	[[ $CTR_USED != *podman* ]] || ctr_podman_purge
	return 0
}

# ---- scenario: ctr_tcp (issue 7: checkpoint and restore with 100 established
# connections within 1.5x the time without): nginx as in `ctr` on its own port,
# checkpointed and restored in place with --tcp-established, in every
# iteration once without client connections ("none") and once while
# tests/progs/tcp_client.py holds CTR_TCP_N keep-alive connections to the
# published port ("conn", a fresh client each time). The client sends a
# request on every connection while the container is checkpointed (the kernel
# retransmits after the restore) and reads the answers after the restore:
# "OK N/N same-sockets=True" is required (untimed). Only the checkpoint and
# restore commands are timed; stasis and podman (runc, CRIU via PATH) as in
# `ctr`. Files: $WORK/ctr_tcp-TOOL-none|conn-checkpoint|restore.us.
CTR_TCP_PORT_STASIS=18282
CTR_TCP_PORT_PODMAN=18283
CTR_TCP_N=100
CTR_TCP_CLIENT=$REPO/tests/progs/tcp_client.py
declare -a CTR_TCP_NOTES=() # lines for the report

ctr_tcp_port() { if [[ $1 == stasis ]]; then echo "$CTR_TCP_PORT_STASIS"; else echo "$CTR_TCP_PORT_PODMAN"; fi; }
ctr_pid() { # TOOL: PID of the container's init (empty if none)
	case $1 in
	stasis) ctr_cli stasis inspect web 2>/dev/null |
		python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["State"]["Pid"] or "")' 2>/dev/null || true ;;
	podman) podman inspect --format '{{.State.Pid}}' "$CTR_PNAME" 2>/dev/null | grep -v '^0$' || true ;;
	esac
}
ctr_tcp_socks() { # TOOL: TCP sockets (not listening) in the container's netns, "?" if unknown
	local pid
	pid=$(ctr_pid "$1")
	[[ -n $pid ]] || { echo "?"; return 0; }
	nsenter -t "$pid" -n ss -Htn 2>/dev/null | wc -l
}
ctr_ip_holders() { # IP: how many network namespaces on this host have it
	local seen=" " p ns n=0
	for p in /proc/[0-9]*; do
		ns=$(readlink "$p/ns/net" 2>/dev/null) || continue
		[[ $seen == *" $ns "* ]] && continue
		seen+="$ns "
		if nsenter -t "${p#/proc/}" -n ip -4 -o addr show 2>/dev/null | grep -qF " inet $1/"; then n=$((n + 1)); fi
	done
	echo "$n"
}

run_ctr_tcp() { # TOOL
	local tool=$1 v
	: >"$LOGS/ctr_tcp-$tool.log"
	for v in none conn; do : >"$WORK/ctr_tcp-$tool-$v-checkpoint.us"; : >"$WORK/ctr_tcp-$tool-$v-restore.us"; done
	ctr_prepare ctr_tcp "$tool" "$LOGS/ctr_tcp-$tool.log" "ctr_tcp_$tool" || return 0
	ctr_tcp_cycles "$tool"
	rm -rf "$WORK/ctr_tcp-$tool"
	if [[ $tool == stasis ]]; then ctr_stasis_purge; else ctr_podman_purge; fi
}
ctr_tcp_cycles() { # TOOL
	local tool=$1 log=$LOGS/ctr_tcp-$1.log key=ctr_tcp_$1 d=$WORK/ctr_tcp-$1 port i k v t0 t1 t2 t3 c line ip n
	port=$(ctr_tcp_port "$tool")
	note "ctr_tcp: $tool x $ITERS (no connections, then $CTR_TCP_N established connections)"
	ctr_op "$tool" rm >>"$log" 2>&1 || true
	echo "--- run" >>"$log"
	if ! ctr_op "$tool" tcprun >>"$log" 2>&1; then R[$key]="failed: run: $(ctr_reason "$log")"; return 0; fi
	if ! ctr_answers "$port"; then R[$key]="failed: nginx does not answer on :$port after run"; ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0; fi
	# Each stasis --root has its own IPAM on the one stasis0 bridge: a
	# container of another store (a test's, say) may hold our address, and then
	# the connections reach that one. Such an address is taken by an idle
	# placeholder container in our store, and ours starts again.
	for ((k = 1; ; k++)); do
		[[ $tool == stasis ]] || break
		ip=$(ctr_cli stasis inspect web 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["NetworkSettings"]["IPAddress"])' 2>/dev/null || true)
		[[ -n $ip ]] || break
		n=$(ctr_ip_holders "$ip")
		((n > 1)) || break
		if ((k > 8)); then
			R[$key]="failed: the addresses tried are also held by other network namespaces ($ip the last)"; ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0
		fi
		note "ctr_tcp: stasis: $ip is also held by another network namespace: a placeholder takes it"
		CTR_TCP_NOTES+=("stasis: address $ip was also held by $((n - 1)) other network namespace(s) (a container of another stasis --root on the stasis0 bridge?): an idle placeholder container took it")
		echo "--- $ip clashes: placeholder hold$k, run again" >>"$log"
		ctr_op "$tool" rm >>"$log" 2>&1 || true
		if ! ctr_cli stasis run -d --name "hold$k" nginx "$CTR_CMD" >>"$log" 2>&1 || ! ctr_op "$tool" tcprun >>"$log" 2>&1; then
			R[$key]="failed: run (after a placeholder for $ip): $(ctr_reason "$log")"; return 0
		fi
		if ! ctr_answers "$port"; then R[$key]="failed: nginx does not answer on :$port after run"; ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0; fi
	done
	R[${key}_none]=ok; R[${key}_conn]=ok
	for ((i = 1; i <= WARMUP + ITERS; i++)); do
		for v in none conn; do
			# A failed client check ends that variant only; the other goes on.
			[[ ${R[${key}_$v]} == ok ]] || continue
			c=""
			rm -rf "$d"; mkdir -p "$d"
			if [[ $v == conn ]]; then
				c=$(spawn "$d/out" python3 "$CTR_TCP_CLIENT" http 127.0.0.1 "$port" "$CTR_TCP_N" "$d"); LIVE+=("$c")
				if ! wait_for "$d/out" '^(READY|ERROR)' 30 || ! grep -q '^READY' "$d/out"; then
					R[${key}_conn]="failed: client did not connect: $(tail -n1 "$d/out")"; kill_tree "$c"; forget "$c"; continue
				fi
				if ! grep -qx "FIRST $CTR_TCP_N/$CTR_TCP_N" "$d/out"; then
					R[${key}_conn]="failed: before the checkpoint the client got $(grep '^FIRST' "$d/out")"; kill_tree "$c"; forget "$c"; continue
				fi
			fi
			echo "--- $i $v: checkpoint" >>"$log"
			t0=${EPOCHREALTIME/./}
			if ! ctr_op "$tool" tcpcheckpoint >>"$log" 2>&1; then
				R[${key}_$v]="failed: checkpoint: $(ctr_reason "$log")"; [[ -z $c ]] || kill_tree "$c"
				ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0
			fi
			t1=${EPOCHREALTIME/./}
			[[ -z $c ]] || touch "$d/send"
			echo "--- $i $v: restore" >>"$log"
			t2=${EPOCHREALTIME/./}
			if ! ctr_op "$tool" tcprestore >>"$log" 2>&1; then
				R[${key}_$v]="failed: restore: $(ctr_reason "$log")"; [[ -z $c ]] || kill_tree "$c"
				ctr_op "$tool" rm >>"$log" 2>&1 || true; return 0
			fi
			t3=${EPOCHREALTIME/./}
			if [[ $v == conn ]]; then
				n=$(ctr_tcp_socks "$tool")
				touch "$d/go"
				wait_for "$d/out" '^(OK|ERROR)' 60 || true
				line=$(grep -E '^(OK|ERROR)' "$d/out" | head -1 || true)
				echo "--- client: ${line:-no answer} ($n TCP sockets in the container after the restore)" >>"$log"
				kill_tree "$c"; forget "$c"
				if [[ $line != "OK $CTR_TCP_N/$CTR_TCP_N same-sockets=True" ]]; then
					R[${key}_conn]="failed: iteration $i: the client got \"${line:-no answer in 60 s}\" ($n TCP sockets in the container after the restore)"
					continue
				fi
				# The closed connections leave the container before the next
				# checkpoint (at most 2 s).
				for _ in $(seq 200); do [[ $(ctr_tcp_socks "$tool") == 0 ]] && break; sleep 0.01; done
			elif ! ctr_answers "$port"; then
				R[${key}_none]="failed: nginx does not answer on :$port after restore (iteration $i)"; continue
			fi
			if ((i > WARMUP)); then
				echo $((t1 - t0)) >>"$WORK/ctr_tcp-$tool-$v-checkpoint.us"; echo $((t3 - t2)) >>"$WORK/ctr_tcp-$tool-$v-restore.us"
			fi
		done
	done
	echo "--- rm" >>"$log"
	ctr_op "$tool" rm >>"$log" 2>&1 || true
	R[$key]=ok
}

# ---- scenario: predump (pre-checkpoints and incremental checkpoints): the
# fixtures' dirtier (MEM_MIB MiB, rewriting PD_RATE thousandths of its pages
# per second) in the `ctr` store. Every iteration: (a) a full `container
# checkpoint --print-stats` and `container restore`; (b) `container checkpoint
# -P --print-stats` (the container goes on, its writes tracked), PD_SLEEP
# seconds, `container checkpoint --with-previous --print-stats` and `container
# restore`. After each restore the container checks all its memory on SIGUSR1
# ("VERIFY OK N pages" required, untimed). Wall times are the commands';
# frozen times and page counts come from --print-stats. podman's -P is tried
# once (runc + CRIU via PATH, as in `ctr`) and its error reported.
# Files: $WORK/pd-KIND.us (KIND: full-frozen full-wall full-restore pre-frozen
# pre-wall final-frozen final-wall final-restore), $WORK/pd-final-written.pages
# and pd-final-parent.pages.
PD_NAME=pd
PD_RATE=10
PD_SLEEP=1
PD_TARGET_MS=50
PD_PIMAGE=localhost/stasis-bench-dirtier:latest
PD_PNAME=stasis-bench-pd
PD_KINDS="full-frozen full-wall full-restore pre-frozen pre-wall final-frozen final-wall final-restore"
PD_PAGE=$(getconf PAGESIZE)
PD_PEER="" # one line: what podman's pre-checkpoint did
PD_PEER_DETAIL="" # the runtime and CRIU it ran with

pd_stats() { # FILE (--print-stats output): "frozen_us pages_written pages_skipped_parent", summed over containers
	python3 -c '
import json, sys
t = open(sys.argv[1]).read()
s = json.loads(t[t.index("{"):])
c = [x.get("criu_statistics", {}) for x in s.get("container_statistics", [])]
if not c:
    sys.exit(1)
print(*(sum(int(x.get(k, 0)) for x in c) for k in ("frozen_time", "pages_written", "pages_skipped_parent")))
' "$1" 2>/dev/null
}
pd_log_count() { # REGEX: lines of the container's output that match
	ctr_cli stasis logs "$PD_NAME" 2>/dev/null | grep -cE "$1" || true
}
pd_wait_log() { # REGEX N TIMEOUT_S: until N lines of the container's output match
	local deadline=$((${EPOCHREALTIME/./} + $3 * 1000000))
	until (($(pd_log_count "$1") >= $2)); do
		((${EPOCHREALTIME/./} < deadline)) || return 1
		sleep 0.05
	done
}
pd_verify() { # LOG: the container answers SIGUSR1 with VERIFY OK; else prints why
	local n line
	n=$(pd_log_count '^VERIFY')
	if ! ctr_cli stasis kill -s USR1 "$PD_NAME" >>"$1" 2>&1; then echo "kill -s USR1: $(ctr_reason "$1")"; return 1; fi
	if ! pd_wait_log '^VERIFY' $((n + 1)) 60; then echo "no answer to SIGUSR1 in 60 s"; return 1; fi
	line=$(ctr_cli stasis logs "$PD_NAME" 2>/dev/null | grep '^VERIFY' | tail -1)
	echo "--- $line" >>"$1"
	[[ $line == "VERIFY OK"* ]] || { echo "$line"; return 1; }
}
pd_running() { # the container is running (inspect's State.Running)
	[[ $(ctr_cli stasis inspect "$PD_NAME" 2>/dev/null |
		python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["State"]["Running"])' 2>/dev/null) == True ]]
}
pd_stat() { # FILE median|min|max DIVISOR: that value / DIVISOR, 1 decimal ("-" if none)
	sort -g "$1" | awk -v what="$2" -v d="$3" '{v[NR]=$1} END {
		if (NR == 0) { print "-"; exit }
		if (what == "min") x = v[1]
		else if (what == "max") x = v[NR]
		else x = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
		printf "%.1f", x / d }'
}

run_predump() {
	local log=$LOGS/predump-stasis.log key=predump_stasis d=$WORK/predump fx=$REPO/target/fixtures/dirtier.tar
	local i k t0 t1 t2 t3 t4 t5 t6 why full pre fin frozen written parent
	: >"$log"
	for k in $PD_KINDS; do : >"$WORK/pd-$k.us"; done
	: >"$WORK/pd-final-written.pages"; : >"$WORK/pd-final-parent.pages"
	CTR_STATE[pd_stasis]=$(ctr_state stasis)
	if [[ -z ${CTR_STATE[pd_stasis]} ]] && ! "$STASIS" container checkpoint --help 2>/dev/null | grep -q -- --with-previous; then
		CTR_STATE[pd_stasis]="skipped: stasis container checkpoint has no --with-previous"
	fi
	if [[ -n ${CTR_STATE[pd_stasis]} ]]; then note "predump: stasis: ${CTR_STATE[pd_stasis]}"; return 0; fi
	if ! bash "$REPO/tests/fixtures/build-images.sh" >>"$log" 2>&1; then R[$key]="failed: fixtures: see $log"; return 0; fi
	CTR_USED+=" stasis"
	ctr_stasis_purge
	rm -rf "$d"; mkdir -p "$d"
	note "predump: stasis x $ITERS (dirtier $MEM_MIB MiB, $PD_RATE/1000 of its pages per second)"
	echo "--- import, run" >>"$log"
	if ! ctr_cli stasis import "$fx" dirtier >>"$log" 2>&1; then R[$key]="failed: import: $(ctr_reason "$log")"; return 0; fi
	if ! ctr_cli stasis run -d --name "$PD_NAME" dirtier dirtier "$MEM_MIB" "$PD_RATE" >>"$log" 2>&1; then
		R[$key]="failed: run: $(ctr_reason "$log")"; ctr_stasis_purge; return 0
	fi
	if ! pd_wait_log '^READY' 1 60; then R[$key]="failed: dirtier did not print READY in 60 s"; ctr_stasis_purge; return 0; fi
	for ((i = 1; i <= WARMUP + ITERS; i++)); do
		# (a) full checkpoint, restore
		echo "--- $i: checkpoint --print-stats" >>"$log"
		t0=${EPOCHREALTIME/./}
		if ! ctr_cli stasis container checkpoint --print-stats "$PD_NAME" >"$d/full.json" 2>>"$log"; then
			cat "$d/full.json" >>"$log"; R[$key]="failed: checkpoint: $(ctr_reason "$log")"; break
		fi
		t1=${EPOCHREALTIME/./}
		cat "$d/full.json" >>"$log"
		if ! full=$(pd_stats "$d/full.json"); then R[$key]="failed: checkpoint --print-stats printed no statistics"; break; fi
		echo "--- $i: restore" >>"$log"
		t2=${EPOCHREALTIME/./}
		if ! ctr_cli stasis container restore "$PD_NAME" >>"$log" 2>&1; then R[$key]="failed: restore (after a full checkpoint): $(ctr_reason "$log")"; break; fi
		t3=${EPOCHREALTIME/./}
		if ! why=$(pd_verify "$log"); then R[$key]="failed: iteration $i, after a full checkpoint and restore: $why"; break; fi
		if ((i > WARMUP)); then
			echo "${full%% *}" >>"$WORK/pd-full-frozen.us"; echo $((t1 - t0)) >>"$WORK/pd-full-wall.us"
			echo $((t3 - t2)) >>"$WORK/pd-full-restore.us"
		fi
		# (b) pre-checkpoint, PD_SLEEP s of writes, final checkpoint, restore
		echo "--- $i: checkpoint -P --print-stats" >>"$log"
		t0=${EPOCHREALTIME/./}
		if ! ctr_cli stasis container checkpoint -P --print-stats "$PD_NAME" >"$d/pre.json" 2>>"$log"; then
			cat "$d/pre.json" >>"$log"; R[$key]="failed: checkpoint -P: $(ctr_reason "$log")"; break
		fi
		t1=${EPOCHREALTIME/./}
		cat "$d/pre.json" >>"$log"
		if ! pre=$(pd_stats "$d/pre.json"); then R[$key]="failed: checkpoint -P --print-stats printed no statistics"; break; fi
		if ((i == 1)) && ! pd_running; then R[$key]="failed: the container is not running after checkpoint -P"; break; fi
		sleep "$PD_SLEEP"
		echo "--- $i: checkpoint --with-previous --print-stats" >>"$log"
		t4=${EPOCHREALTIME/./}
		if ! ctr_cli stasis container checkpoint --with-previous --print-stats "$PD_NAME" >"$d/final.json" 2>>"$log"; then
			cat "$d/final.json" >>"$log"; R[$key]="failed: checkpoint --with-previous: $(ctr_reason "$log")"; break
		fi
		t5=${EPOCHREALTIME/./}
		cat "$d/final.json" >>"$log"
		if ! fin=$(pd_stats "$d/final.json"); then R[$key]="failed: checkpoint --with-previous --print-stats printed no statistics"; break; fi
		if ((i == 1)) && pd_running; then R[$key]="failed: the container still runs after checkpoint --with-previous"; break; fi
		echo "--- $i: restore" >>"$log"
		t2=${EPOCHREALTIME/./}
		if ! ctr_cli stasis container restore "$PD_NAME" >>"$log" 2>&1; then R[$key]="failed: restore (after --with-previous): $(ctr_reason "$log")"; break; fi
		t6=${EPOCHREALTIME/./}
		if ! why=$(pd_verify "$log"); then R[$key]="failed: iteration $i, after checkpoint -P, --with-previous and restore: $why"; break; fi
		if ((i > WARMUP)); then
			echo "${pre%% *}" >>"$WORK/pd-pre-frozen.us"; echo $((t1 - t0)) >>"$WORK/pd-pre-wall.us"
			read -r frozen written parent <<<"$fin"
			echo "$frozen" >>"$WORK/pd-final-frozen.us"; echo $((t5 - t4)) >>"$WORK/pd-final-wall.us"
			echo "$written" >>"$WORK/pd-final-written.pages"; echo "$parent" >>"$WORK/pd-final-parent.pages"
			echo $((t6 - t2)) >>"$WORK/pd-final-restore.us"
			read -r _ written _ <<<"$full"
			R[${key}_full_pages]=$written # for the limit line
		fi
	done
	echo "--- rm" >>"$log"
	ctr_cli stasis rm -f "$PD_NAME" >>"$log" 2>&1 || true
	rm -rf "$d"
	[[ ${R[$key]:-} == failed:* ]] || R[$key]=ok
	ctr_stasis_purge
}

# The peer: podman's `container checkpoint -P`, once, on the same workload.
run_predump_peer() {
	local log=$LOGS/predump-podman.log fx=$REPO/target/fixtures/dirtier.tar line feat
	: >"$log"
	CTR_STATE[pd_podman]=$(ctr_state podman)
	if [[ -n ${CTR_STATE[pd_podman]} ]]; then PD_PEER="${CTR_STATE[pd_podman]}"; return 0; fi
	if ! bash "$REPO/tests/fixtures/build-images.sh" >>"$log" 2>&1; then PD_PEER="failed: fixtures: see $log"; return 0; fi
	CTR_USED+=" podman"
	mkdir -p "$CTR_CRIU_DIR"
	ln -sfn "$CRIU" "$CTR_CRIU_DIR/criu"
	CTR_PODMAN_VERSION=$(podman --version | awk '{print $3}')
	PD_PEER_DETAIL="--runtime runc ($(runc --version | awk 'NR==1{print $3}')), CRIU $(PATH="$CTR_CRIU_DIR:$PATH" criu --version | awk '/^Version/{print $2}') ($CRIU, first in PATH)"
	note "predump: podman $CTR_PODMAN_VERSION: container checkpoint -P, once"
	podman rm -f -t 0 "$PD_PNAME" >/dev/null 2>&1 || true
	echo "--- import, run" >>"$log"
	if ! podman import --change 'CMD ["/bin/dirtier"]' "$fx" "$PD_PIMAGE" >>"$log" 2>&1; then PD_PEER="import fails: $(ctr_reason "$log")"; return 0; fi
	if ! ctr_cli podman run -d --name "$PD_PNAME" "${CTR_PODMAN_RUN[@]}" "$PD_PIMAGE" /bin/dirtier "$MEM_MIB" "$PD_RATE" >>"$log" 2>&1; then
		PD_PEER="run fails: $(ctr_reason "$log")"; ctr_podman_purge; return 0
	fi
	for _ in $(seq 600); do podman logs "$PD_PNAME" 2>/dev/null | grep -q '^READY' && break; sleep 0.1; done
	echo "--- checkpoint -P" >>"$log"
	if ctr_cli podman container checkpoint -P "$PD_PNAME" >>"$log" 2>&1; then
		PD_PEER="\`podman container checkpoint -P\` succeeds (not timed here)"
	else
		# runc refuses before CRIU runs: its message, else the last line.
		line=$(grep -o 'level=error msg="[^"]*"' "$log" | tail -1 | sed 's/^level=error msg=//' || true)
		[[ -n $line ]] || line=$(ctr_reason "$log")
		feat=$("$CRIU" check --feature mem_dirty_track 2>&1 | grep -i 'dirty' | tail -1 | sed 's/^[A-Za-z]* *([^)]*): //' || true)
		PD_PEER="\`podman container checkpoint -P\` fails: $line${feat:+ (\`criu check --feature mem_dirty_track\`: $feat)}"
	fi
	echo "--- $PD_PEER" >>"$log"
	ctr_podman_purge
}

# shellcheck source=bench/criu_dropin.sh
. "$BENCH_DIR/criu_dropin.sh"

# ---- run
start=${EPOCHREALTIME/./}
[[ " $SCENARIOS " == *" run "* && -z $STASIS_STATE ]] && run_containers
[[ " $SCENARIOS " == *" limits "* ]] && run_limits
for tool in stasis criu; do
	[[ -z $(tool_state "$tool") ]] || continue
	[[ " $SCENARIOS " == *" counter "* ]] && run_counter "$tool"
	if [[ " $SCENARIOS " == *" nginx "* ]]; then run_nginx "$tool" plain; run_nginx "$tool" tcp; fi
	if [[ " $SCENARIOS " == *" memory "* ]]; then
		for t in $TARGETS; do run_memory "$tool" "$t"; done
	fi
done
if [[ " $SCENARIOS " == *" ctr "* ]]; then run_ctr stasis; run_ctr podman; fi
if [[ " $SCENARIOS " == *" ctr_tcp "* ]]; then run_ctr_tcp stasis; run_ctr_tcp podman; fi
if [[ " $SCENARIOS " == *" predump "* ]]; then run_predump; run_predump_peer; fi
[[ " $SCENARIOS " == *" criu_dropin "* ]] && run_criu_dropin
elapsed=$(((${EPOCHREALTIME/./} - start) / 1000000))

# ---- report
cell() { # TOOL KEY FILE median|min: a figure, or why there is none
	local st
	st=$(tool_state "$1")
	if [[ -n $st ]]; then echo "${st%%:*}"; return; fi
	if [[ ${R[$2]:-} != ok ]]; then echo "${R[$2]:+failed}"; return; fi
	stat_ms "$3" "$4"
}
cell_gbps() { # TOOL KEY FILE median|min
	local ms
	ms=$(cell "$@")
	[[ $ms =~ ^[0-9.]+$ ]] && gbps "${R[${2}_bytes]}" "$ms" || echo "$ms"
}
ctr_cell() { # TOOL inplace|export OP median|min: a figure, or why there is none
	local st=${CTR_STATE[$1]-"not run"} key=ctr_${1}_$2
	if [[ -n $st ]]; then echo "${st%%:*}"; return; fi
	if [[ ${R[$key]:-} != ok ]]; then echo "${R[$key]:+failed}"; return; fi
	stat_ms "$WORK/ctr-$1-$3.us" "$4"
}
ctr_tcp_cell() { # TOOL none|conn checkpoint|restore median|min: a figure, or why there is none
	local st=${CTR_STATE[$1]-"not run"} key=ctr_tcp_$1
	if [[ -n $st ]]; then echo "${st%%:*}"; return; fi
	if [[ ${R[$key]:-} == failed:* || ${R[${key}_$2]:-} == failed:* ]]; then echo "fails"; return; fi
	if [[ ${R[$key]:-} != ok ]]; then echo ""; return; fi
	stat_ms "$WORK/ctr_tcp-$1-$2-$3.us" "$4"
}
pd_cell() { # KIND median|min: a figure (ms, or MiB for final-written/final-parent), or why there is none
	local st=${CTR_STATE[pd_stasis]-"not run"}
	if [[ -n $st ]]; then echo "${st%%:*}"; return; fi
	if [[ ${R[predump_stasis]:-} != ok ]]; then echo "${R[predump_stasis]:+failed}"; return; fi
	case $1 in
	final-written | final-parent) pd_stat "$WORK/pd-$1.pages" "$2" $((1048576 / PD_PAGE)) ;;
	*) pd_stat "$WORK/pd-$1.us" "$2" 1000 ;;
	esac
}
cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal/{printf "%.0f", $2/1048576}' /proc/meminfo)
thp=$(grep -o '\[[a-z]*\]' /sys/kernel/mm/transparent_hugepage/enabled | tr -d '[]' || echo '?')
rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$REPO" diff --quiet HEAD 2>/dev/null || rev="$rev (+ uncommitted changes)"
# Free page reporting (virtio-balloon feature bit 5): the guest hands free
# 2 MiB+ blocks back to the host, and touching them again costs host faults.
fpr=""
for f in /sys/bus/virtio/drivers/virtio_balloon/virtio*/features; do
	[[ -r $f && $(cut -c6 "$f") == 1 ]] && fpr="; virtio-balloon free page reporting: on (memory figures are noisier)"
done
tgt_ms=$(awk -v m="$MEM_MIB" 'BEGIN{printf "%.0f", m*1048576/3.5e9*1000}')
L() { printf '%s\n' "$*"; }
{
	L "Run on $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/run.sh\` ($ITERS timed iterations per figure after $WARMUP untimed, ${elapsed} s in all)."
	L ""
	L "- Kernel: $(uname -r) ($(uname -m)); CPU: ${cpu:-?}, $(nproc) cores; memory: ${mem_gib} GiB; THP: $thp$fpr"
	L "- stasis: $STASIS at $rev${STASIS_STATE:+ — $STASIS_STATE}"
	L "- CRIU: ${CRIU_VERSION:+$CRIU_VERSION, }$CRIU${CRIU_STATE:+ — $CRIU_STATE}"
	L ""
	if [[ -n ${R[lim_readv]:-} ]]; then
		L "### Limits ($MEM_MIB MiB, best of 3, \`bench/vmread\`)"
		L ""
		L "| operation | GB/s |"
		L "|---|---:|"
		L "| memcpy, 64 MiB pieces | ${R[lim_memcpy]} |"
		L "| process_vm_readv from a touched child, 64 MiB iovecs | ${R[lim_readv]} |"
		L "| process_vm_readv, 4 KiB iovecs | ${R[lim_readv_4k]} |"
		L "| write(2) into a new file on tmpfs | ${R[lim_write_tmpfs]} |"
		L "| write(2) into a new file on tmpfs huge=always | ${R[lim_write_tmpfs_huge]} |"
		L "| write(2) into a new file on disk (page cache, no fsync) | ${R[lim_write_disk]} |"
		L "| process_vm_writev into an untouched mapping (faults included) | ${R[lim_writev_fresh]} |"
		L "| process_vm_writev into an untouched MADV_HUGEPAGE mapping | ${R[lim_writev_fresh_thp]} |"
		L "| process_vm_writev into a touched mapping (copy only) | ${R[lim_writev_touched]} |"
		L "| MADV_POPULATE_WRITE of an untouched mapping | ${R[lim_populate]} |"
		for t in tmpfs tmpfs_huge disk; do
			L "| bound: readv then write, one thread, $(target_label "$t") | $(awk -v a="${R[lim_readv]}" -v b="${R[lim_write_$t]}" 'BEGIN{printf "%.2f", 1/(1/a+1/b)}') |"
		done
		L ""
	fi
	if [[ " $SCENARIOS " == *" counter "* ]]; then
		L "### Counter (\`sh\` loop + \`sleep\`, images on disk), ms"
		L ""
		L "| | stasis median | stasis min | $(tool_name criu) median | $(tool_name criu) min | target |"
		L "|---|---:|---:|---:|---:|---|"
		for op in dump restore; do
			local_label=$([[ $op == dump ]] && echo "dump" || echo "restore --detach")
			target=$([[ $op == dump ]] && echo "≤ 15 (issue's CRIU 4.2: 83)" || echo "≤ 15 (issue's CRIU 4.2: 69)")
			row="| $local_label"
			for tool in stasis criu; do
				for s in median min; do row+=" | $(cell "$tool" "counter_$tool" "$WORK/counter-$tool-$op.us" "$s")"; done
			done
			L "$row | $target |"
		done
		L ""
	fi
	if [[ " $SCENARIOS " == *" nginx "* ]]; then
		L "### nginx (master + worker, images on disk), ms"
		L ""
		L "| | stasis median | stasis min | $(tool_name criu) median | $(tool_name criu) min | target |"
		L "|---|---:|---:|---:|---:|---|"
		for mode in plain tcp; do
			for op in dump restore; do
				lbl="$op"; [[ $mode == tcp ]] && lbl="$op, 1 established connection (--tcp-established)"
				case $mode$op in
				plaindump) target="≤ 20 (issue's CRIU 4.2: 67)" ;; plainrestore) target="≤ 20 (issue's CRIU 4.2: 80)" ;;
				tcpdump) target="≤ 30 (issue's CRIU 4.2: 85)" ;; tcprestore) target="≤ 40 (issue's CRIU 4.2: 137)" ;;
				esac
				row="| $lbl"
				for tool in stasis criu; do
					for s in median min; do row+=" | $(cell "$tool" "nginx_${tool}_$mode" "$WORK/nginx-$tool-$mode-$op.us" "$s")"; done
				done
				L "$row | $target |"
			done
		done
		L ""
	fi
	if [[ " $SCENARIOS " == *" run "* ]]; then
		L "### Container start: \`run -d\` of busybox until the command returns, ms"
		L ""
		L "| | median | min | target |"
		L "|---|---:|---:|---|"
		for t in stasis podman; do
			if [[ ${R[run_$t]:-} == ok ]]; then
				L "| $t | $(stat_ms "$WORK/run-$t.us" median) | $(stat_ms "$WORK/run-$t.us" min) | $([[ $t == stasis ]] && echo "≤ 150") |"
			else
				L "| $t | ${R[run_$t]:-not run} | | |"
			fi
		done
		if [[ ${R[run_stasis]:-} == ok && ${R[run_podman]:-} == ok ]]; then
			L ""
			L "stasis / podman (median): $(ratio "$(stat_ms "$WORK/run-stasis.us" median)" "$(stat_ms "$WORK/run-podman.us" median)")"
		fi
		L ""
	fi
	if [[ " $SCENARIOS " == *" ctr "* ]]; then
		L "### Container checkpoint/restore: nginx with a published port (\`-p HOSTPORT:80\`), ms"
		L ""
		L "In place: \`container checkpoint NAME\` (the container stops), then \`container restore NAME\`. Export/import: \`container checkpoint -e FILE.tar.zst\`, \`rm -f\` (untimed), \`container restore -i FILE.tar.zst\`. After every restore nginx answers on the host port (checked, untimed)."
		L ""
		L "| | stasis median | stasis min | podman ${CTR_PODMAN_VERSION:+$CTR_PODMAN_VERSION }median | podman ${CTR_PODMAN_VERSION:+$CTR_PODMAN_VERSION }min | target |"
		L "|---|---:|---:|---:|---:|---|"
		for op in checkpoint restore export import; do
			case $op in
			checkpoint) lbl="checkpoint, in place"; ph=inplace; tgt="≤ 80 (issue's podman 4.3: 426)" ;;
			restore) lbl="restore, in place"; ph=inplace; tgt="≤ 80 (issue's podman 4.3: 371)" ;;
			export) lbl="checkpoint -e FILE.tar.zst"; ph=export; tgt="≤ 150 (issue's podman 4.3: 531)" ;;
			import) lbl="restore -i FILE.tar.zst (container removed)"; ph=export; tgt="≤ 150 (issue's podman 4.3: 442)" ;;
			esac
			row="| $lbl"
			for t in stasis podman; do
				for s in median min; do row+=" | $(ctr_cell "$t" "$ph" "$op" "$s")"; done
			done
			L "$row | $tgt |"
		done
		if [[ ${R[ctr_stasis_inplace]:-} == ok && ${R[ctr_podman_inplace]:-} == ok && ${R[ctr_stasis_export]:-} == ok && ${R[ctr_podman_export]:-} == ok ]]; then
			row="stasis / podman (median):"
			for op in checkpoint restore export import; do
				row+=" $op $(ratio "$(stat_ms "$WORK/ctr-stasis-$op.us" median)" "$(stat_ms "$WORK/ctr-podman-$op.us" median)")"
				[[ $op == import ]] || row+=","
			done
			L ""
			L "$row"
		fi
		L ""
		[[ -z $CTR_PODMAN_DETAIL ]] || L "- podman: $CTR_PODMAN_VERSION, $CTR_PODMAN_DETAIL, network bridge (default), \`run\` with \`${CTR_PODMAN_RUN[*]}\`"
		for t in stasis podman; do
			[[ -z ${CTR_STATE[$t]:-} ]] || L "- $t: ${CTR_STATE[$t]}"
			[[ -z ${R[ctr_${t}_export_bytes]:-} ]] || L "- $t: exported archive $(awk -v b="${R[ctr_${t}_export_bytes]}" 'BEGIN{printf "%.0f", b/1024}') KiB"
		done
		L ""
	fi
	if [[ " $SCENARIOS " == *" ctr_tcp "* ]]; then
		L "### Container checkpoint/restore with $CTR_TCP_N established connections: nginx with a published port, ms"
		L ""
		L "In place with \`--tcp-established\` on both commands. Every iteration checkpoints and restores the container twice: without client connections, then while \`tests/progs/tcp_client.py\` (a fresh one each time) holds $CTR_TCP_N keep-alive HTTP connections from the host to the published port. The client sends a request on each connection while the container is checkpointed (the kernel retransmits after the restore); after the restore every connection must answer on the same socket (\`OK $CTR_TCP_N/$CTR_TCP_N same-sockets=True\`, checked, untimed)."
		L ""
		L "| | stasis median | stasis min | podman ${CTR_PODMAN_VERSION:+$CTR_PODMAN_VERSION }median | podman ${CTR_PODMAN_VERSION:+$CTR_PODMAN_VERSION }min | target |"
		L "|---|---:|---:|---:|---:|---|"
		for v in none conn; do
			for op in checkpoint restore; do
				if [[ $v == none ]]; then lbl="$op --tcp-established, no connections"; else lbl="$op --tcp-established, $CTR_TCP_N established connections"; fi
				row="| $lbl"
				for t in stasis podman; do
					for s in median min; do row+=" | $(ctr_tcp_cell "$t" "$v" "$op" "$s")"; done
				done
				L "$row | |"
			done
		done
		for op in checkpoint restore; do
			row="| $op: with / without connections (medians)"
			for t in stasis podman; do
				a=$(ctr_tcp_cell "$t" conn "$op" median); b=$(ctr_tcp_cell "$t" none "$op" median)
				if [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]]; then row+=" | $(ratio "$a" "$b") |"; else row+=" | - |"; fi
			done
			L "$row | ≤ 1.5 |"
		done
		L ""
		[[ -z $CTR_PODMAN_DETAIL ]] || L "- podman: $CTR_PODMAN_VERSION, $CTR_PODMAN_DETAIL, network bridge (default), \`run\` with \`${CTR_PODMAN_RUN[*]}\`"
		for t in stasis podman; do
			[[ -z ${CTR_STATE[$t]:-} ]] || L "- $t: ${CTR_STATE[$t]}"
		done
		for t in "${CTR_TCP_NOTES[@]}"; do L "- $t"; done
		# The peer's failures here too (stasis's are in the list at the end).
		for v in "" _none _conn; do
			st=${R[ctr_tcp_podman$v]:-}
			[[ $st == failed:* ]] || continue
			case $v in _none) w=" without connections" ;; _conn) w=" with $CTR_TCP_N connections" ;; *) w="" ;; esac
			L "- podman$w fails: ${st#failed: }"
		done
		L ""
	fi
	if [[ " $SCENARIOS " == *" predump "* ]]; then
		L "### Pre-checkpoint and incremental checkpoint: \`dirtier $MEM_MIB $PD_RATE\` ($MEM_MIB MiB, $(awk -v r="$PD_RATE" 'BEGIN{printf "%g", r/10}')% of its pages rewritten per second), ms"
		L ""
		t=disk; [[ $(stat -f -c %T "$WORK") == tmpfs ]] && t=tmpfs
		L "Every iteration, in the bench's store under $WORK, $(target_label "$t"): a full \`container checkpoint --print-stats\` and \`container restore\`; then \`container checkpoint -P --print-stats\` (the container goes on writing), $PD_SLEEP s, \`container checkpoint --with-previous --print-stats\` (the container stops) and \`container restore\`. After each restore the container checks every page on SIGUSR1 (\`VERIFY OK\`, checked, untimed). Wall times are the commands'; frozen times and pages are \`frozen_time\`, \`pages_written\` and \`pages_skipped_parent\` from \`--print-stats\`."
		L ""
		L "| | stasis median | stasis min | target |"
		L "|---|---:|---:|---|"
		for k in full-frozen full-wall full-restore pre-frozen pre-wall final-frozen final-wall final-restore final-written final-parent; do
			tgt=""
			case $k in
			full-frozen) lbl="full checkpoint: frozen" ;;
			full-wall) lbl="full checkpoint: wall" ;;
			full-restore) lbl="restore after the full checkpoint: wall" ;;
			pre-frozen) lbl="pre-checkpoint (-P): frozen" ;;
			pre-wall) lbl="pre-checkpoint (-P): wall" ;;
			final-frozen) lbl="final checkpoint (--with-previous): frozen"; tgt="≤ $PD_TARGET_MS" ;;
			final-wall) lbl="final checkpoint (--with-previous): wall" ;;
			final-restore) lbl="restore after the final checkpoint (parent chain): wall" ;;
			final-written) lbl="final dump: MiB written" ;;
			final-parent) lbl="final dump: MiB left to the parent (pre-checkpoint)" ;;
			esac
			L "| $lbl | $(pd_cell "$k" median) | $(pd_cell "$k" min) | $tgt |"
		done
		L ""
		v=$(pd_cell final-frozen median)
		if [[ $v =~ ^[0-9.]+$ ]]; then
			met=$(awk -v v="$v" -v t="$PD_TARGET_MS" 'BEGIN{print (v <= t) ? "met" : "not met"}')
			L "- Target: final dump's frozen time ≤ $PD_TARGET_MS ms: **$met** (median $v ms, max $(pd_cell final-frozen max) ms over $ITERS iterations)"
		else
			L "- Target: final dump's frozen time ≤ $PD_TARGET_MS ms: not measured (${v:-no result})"
		fi
		# The limit, when the `limits` scenario ran: one thread reading the
		# memory and writing it to the store's file system.
		if [[ -n ${R[lim_readv]:-} && -n ${R[lim_write_$t]:-} && -n ${R[predump_stasis_full_pages]:-} && $v =~ ^[0-9.]+$ ]]; then
			bw=$(awk -v a="${R[lim_readv]}" -v b="${R[lim_write_$t]}" 'BEGIN{printf "%.2f", 1/(1/a+1/b)}')
			L "- Limit (\`limits\` above): process_vm_readv then write(2) to $(target_label "$t"), one thread, $bw GB/s: the full dump's $(awk -v p="${R[predump_stasis_full_pages]}" -v s="$PD_PAGE" 'BEGIN{printf "%.0f", p*s/1048576}') MiB take ≥ $(awk -v p="${R[predump_stasis_full_pages]}" -v s="$PD_PAGE" -v g="$bw" 'BEGIN{printf "%.0f", p*s/(g*1e9)*1000}') ms, the final dump's $(pd_cell final-written median) MiB ≥ $(awk -v m="$(pd_cell final-written median)" -v g="$bw" 'BEGIN{printf "%.1f", m*1048576/(g*1e9)*1000}') ms"
		fi
		if [[ -n $PD_PEER ]]; then
			L "- podman${CTR_PODMAN_VERSION:+ $CTR_PODMAN_VERSION}${PD_PEER_DETAIL:+ ($PD_PEER_DETAIL)}: $PD_PEER"
		fi
		[[ -z ${CTR_STATE[pd_stasis]:-} ]] || L "- stasis: ${CTR_STATE[pd_stasis]}"
		L ""
	fi
	[[ " $SCENARIOS " == *" criu_dropin "* ]] && report_criu_dropin
	if [[ " $SCENARIOS " == *" memory "* ]]; then
		L "### $MEM_MIB MiB of touched anonymous memory (\`bench/memhog\`)"
		L ""
		L "GB/s = bytes of \`pages-*.img\` written / dump wall time (10^9 B/s); \"vs readv\" = median GB/s / process_vm_readv GB/s above."
		L ""
		L "| | stasis median | stasis min | $(tool_name criu) median | $(tool_name criu) min | target |"
		L "|---|---:|---:|---:|---:|---|"
		for t in $TARGETS; do
			lbl=$(target_label "$t")
			for kind in dump_ms dump_gbps dump_ratio restore_ms; do
				case $kind in
				dump_ms) row="| dump to $lbl, ms"; tgt="≤ $tgt_ms (= 3.5 GB/s; issue's CRIU 4.2: 975)" ;;
				dump_gbps) row="| dump to $lbl, GB/s"; tgt="≥ 3.5 (issue's CRIU 4.2: 1.1)" ;;
				dump_ratio) row="| dump to $lbl, vs readv"; tgt="" ;;
				restore_ms) row="| eager restore from $lbl, ms"; tgt="≤ 300 (issue's CRIU 4.2: 772)" ;;
				esac
				for tool in stasis criu; do
					f=$WORK/mem-$tool-$t-dump.us
					[[ $kind == restore_ms ]] && f=$WORK/mem-$tool-$t-restore.us
					for s in median min; do
						case $kind in
						dump_ms | restore_ms) v=$(cell "$tool" "mem_${tool}_$t" "$f" "$s") ;;
						dump_gbps) v=$(cell_gbps "$tool" "mem_${tool}_$t" "$f" "$s") ;;
						dump_ratio)
							if [[ $s == min ]]; then v=""; else
								v=$(cell_gbps "$tool" "mem_${tool}_$t" "$f" median)
								[[ $v =~ ^[0-9.]+$ ]] && v=$(ratio "$v" "${R[lim_readv]:-}")
							fi ;;
						esac
						row+=" | $v"
					done
				done
				L "$row | $tgt |"
			done
		done
		L ""
	fi
	# Failures, one line each.
	for k in "${!R[@]}"; do
		if [[ ${R[$k]} == failed:* ]]; then L "- $k ${R[$k]}"; fi
	done | sort
} >"$RESULTS"
cat "$RESULTS"

if ((WRITE)); then
	md=$REPO/BENCHMARKS.md
	begin='<!-- results:begin (bench/run.sh --write rewrites this section) -->'
	end='<!-- results:end -->'
	if [[ -f $md ]] && grep -qF "$begin" "$md" && grep -qF "$end" "$md"; then
		awk -v b="$begin" -v e="$end" -v f="$RESULTS" '
			$0 == b { print; while ((getline l < f) > 0) print l; skip = 1; next }
			$0 == e { skip = 0 }
			!skip { print }' "$md" >"$md.new"
	else
		{ [[ -f $md ]] && cat "$md"; L ""; L "## Results"; L ""; L "$begin"; cat "$RESULTS"; L "$end"; } >"$md.new"
	fi
	chown --reference="$REPO" "$md.new" 2>/dev/null || true
	mv "$md.new" "$md"
	note "rewrote the results section of $md"
fi
