# Sourced by bench/run.sh: scenario `criu_dropin` (issue 9). Debian's podman
# with --runtime runc checkpoints and restores nginx (published port) with
# Stasis installed as `criu` (a symlink first in PATH): in place and through
# an exported archive, WARMUP + ITERS cycles each. Every command runs with
# --print-stats, so besides the wall time we time the engine's share in the
# same run: podman's own duration, runc's (runtime_*_duration, which
# includes `criu swrk`) and the engine's (criu_statistics: freezing + frozen
# time for a checkpoint, restore_time for a restore). The `ctr` scenario's
# podman peer (the same podman and runc with CRIU 4.2) gives the comparison.
# Files: $WORK/cd-PHASE-OP-{wall,podman,runtime,engine}.us.

CD_PORT=18283
CD_NAME=stasis-bench-dropin
CD_DIR=$WORK/criu-dropin # holds the `criu` symlink to $STASIS
CD_STATE=""

cd_cli() { PATH="$CD_DIR:$PATH" podman --runtime runc "$@"; }

# cd_stats JSON_FILE OP PHASE: appends the durations --print-stats reported.
cd_stats() {
	python3 - "$1" "$2" "$WORK/cd-$3-$2" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
op, out = sys.argv[2], sys.argv[3]
c = doc["container_statistics"][0]
s = c.get("criu_statistics") or {}
if op in ("checkpoint", "export"):
    podman, runtime = doc["podman_checkpoint_duration"], c["runtime_checkpoint_duration"]
    engine = s.get("freezing_time", 0) + s.get("frozen_time", 0)
else:
    podman, runtime = doc["podman_restore_duration"], c["runtime_restore_duration"]
    engine = s.get("restore_time", 0)
if engine <= 0:
    sys.exit("no engine time in --print-stats")
for k, v in (("podman", podman), ("runtime", runtime), ("engine", engine)):
    open(f"{out}-{k}.us", "a").write(f"{v}\n")
PY
}

cd_phase() { # inplace|export
	local phase=$1 log=$LOGS/criu_dropin.log f=$DISK/criu-dropin.tar.gz i t0 t1 a b
	if [[ $phase == inplace ]]; then a=checkpoint b=restore; else a=export b=import; fi
	for op in $a $b; do for k in wall podman runtime engine; do : >"$WORK/cd-$phase-$op-$k.us"; done; done
	note "criu_dropin ($phase): podman + runc + stasis as criu x $ITERS"
	cd_cli rm -f -t 0 "$CD_NAME" >>"$log" 2>&1 || true
	if ! cd_cli run -d --name "$CD_NAME" -p "$CD_PORT:80" "${CTR_PODMAN_RUN[@]}" "$CTR_PIMAGE" "$CTR_CMD" >>"$log" 2>&1; then
		R[cd_$phase]="failed: run: $(ctr_reason "$log")"; return 0
	fi
	if ! ctr_answers "$CD_PORT"; then R[cd_$phase]="failed: nginx does not answer after run"; return 0; fi
	for ((i = 1; i <= WARMUP + ITERS; i++)); do
		rm -f "$f"
		echo "--- $phase $i: $a" >>"$log"
		t0=${EPOCHREALTIME/./}
		case $a in
		checkpoint) cd_cli container checkpoint --print-stats "$CD_NAME" >"$WORK/cd.json" 2>>"$log" ;;
		export) cd_cli container checkpoint --print-stats -e "$f" "$CD_NAME" >"$WORK/cd.json" 2>>"$log" ;;
		esac || { R[cd_$phase]="failed: $a: $(ctr_reason "$log")"; return 0; }
		t1=${EPOCHREALTIME/./}
		if ctr_answers "$CD_PORT" 0; then R[cd_$phase]="failed: nginx still answers after $a"; return 0; fi
		((i > WARMUP)) && { echo $((t1 - t0)) >>"$WORK/cd-$phase-$a-wall.us"; cd_stats "$WORK/cd.json" "$a" "$phase" 2>>"$log" || { R[cd_$phase]="failed: $a: no statistics"; return 0; }; }
		if [[ $phase == export ]]; then cd_cli rm -f -t 0 "$CD_NAME" >>"$log" 2>&1 || true; fi
		echo "--- $phase $i: $b" >>"$log"
		t0=${EPOCHREALTIME/./}
		case $b in
		restore) cd_cli container restore --print-stats "$CD_NAME" >"$WORK/cd.json" 2>>"$log" ;;
		import) cd_cli container restore --print-stats -i "$f" >"$WORK/cd.json" 2>>"$log" ;;
		esac || { R[cd_$phase]="failed: $b: $(ctr_reason "$log")"; return 0; }
		t1=${EPOCHREALTIME/./}
		if ! ctr_answers "$CD_PORT"; then R[cd_$phase]="failed: nginx does not answer after $b ($i)"; return 0; fi
		((i > WARMUP)) && { echo $((t1 - t0)) >>"$WORK/cd-$phase-$b-wall.us"; cd_stats "$WORK/cd.json" "$b" "$phase" 2>>"$log" || { R[cd_$phase]="failed: $b: no statistics"; return 0; }; }
	done
	cd_cli rm -f -t 0 "$CD_NAME" >>"$log" 2>&1 || true
	rm -f "$f"
	R[cd_$phase]=ok
}

run_criu_dropin() {
	local log=$LOGS/criu_dropin.log fx=$REPO/target/fixtures/nginx.tar
	: >"$log"
	if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then CD_STATE="not available: podman or runc is not installed"; return 0; fi
	[[ -x $STASIS ]] || { CD_STATE="not available: no binary at $STASIS"; return 0; }
	bash "$REPO/tests/fixtures/build-images.sh" >>"$log" 2>&1 || { CD_STATE="failed: fixtures"; return 0; }
	mkdir -p "$CD_DIR"
	ln -sfn "$STASIS" "$CD_DIR/criu"
	CTR_USED+=" podman"
	podman rmi -f "$CTR_PIMAGE" >>"$log" 2>&1 || true
	if ! podman import --change "CMD [\"$CTR_CMD\"]" "$fx" "$CTR_PIMAGE" >>"$log" 2>&1; then CD_STATE="failed: import"; return 0; fi
	cd_phase inplace
	cd_phase export
	cd_cli rm -f -t 0 "$CD_NAME" >>"$log" 2>&1 || true
	podman rmi -f "$CTR_PIMAGE" >>"$log" 2>&1 || true
	rm -rf "$CD_DIR"
}

cd_cell() { # PHASE OP KIND: median ms, or why there is none
	if [[ -n $CD_STATE ]]; then echo "${CD_STATE%%:*}"; return; fi
	if [[ ${R[cd_$1]:-} != ok ]]; then echo "${R[cd_$1]:+failed}"; return; fi
	stat_ms "$WORK/cd-$1-$2-$3.us" median
}

report_criu_dropin() {
	L "### podman + runc with Stasis as \`criu\` (issue 9): nginx with a published port, ms (median)"
	L ""
	L "\`podman --runtime runc container checkpoint/restore --print-stats\` with a \`criu\` symlink to stasis first in PATH; run with \`${CTR_PODMAN_RUN[*]}\` and podman's default seccomp profile. *podman* is podman's own figure, *runc + criu* runc's (it includes \`criu swrk\`), *engine* the engine's (freezing + frozen time of a checkpoint, restore time of a restore). After every restore nginx answers on the host port (checked, untimed)."
	L ""
	L "| | wall | podman | runc + criu | engine | engine / wall | target |"
	L "|---|---:|---:|---:|---:|---:|---|"
	local phase op lbl w e
	for phase in inplace export; do
		for op in checkpoint restore export import; do
			[[ $phase == inplace && ($op == export || $op == import) ]] && continue
			[[ $phase == export && ($op == checkpoint || $op == restore) ]] && continue
			case $op in
			checkpoint) lbl="checkpoint, in place" ;; restore) lbl="restore, in place" ;;
			export) lbl="checkpoint -e FILE.tar.gz" ;; import) lbl="restore -i FILE.tar.gz (container removed)" ;;
			esac
			w=$(cd_cell "$phase" "$op" wall)
			e=$(cd_cell "$phase" "$op" engine)
			L "| $lbl | $w | $(cd_cell "$phase" "$op" podman) | $(cd_cell "$phase" "$op" runtime) | $e | $(ratio "$e" "$w") | engine ≤ 0.20 of podman's total |"
		done
	done
	[[ -z $CD_STATE ]] || L "- $CD_STATE"
	L ""
}
