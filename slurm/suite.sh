#!/usr/bin/env bash
# Run: sbatch slurm/suite.sh
#   e.g. CIFAR_SIF=cifar.sif BENCH_DATA=/scratch/cifar10 sbatch -p gpu -A myproject slurm/suite.sh
#        sbatch --nodes=4 --ntasks-per-node=4 --gres=gpu:4 slurm/suite.sh    (4 nodes x 4 GPUs)
#
# Runs the three cases of the suite, each round of each case as its own srun step, and writes one JSON
# per case and round into runs/slurm-<jobid>/ (override the parent with BENCH_RUNS), then report.md /
# report.png there, with the comparison against this system's own baseline when BENCH_BASELINE names one.
#   baseline: 1 node, 1 task, 1 GPU    dp: 1 node, 1 task, all GPUs of the node
#   ddp:      all nodes, one task per GPU (Lightning's SLURMEnvironment reads rank/world size/master)
# Environment:
#   CIFAR_SIF      Apptainer image (make image); unset = the host's Python (.venv if present)
#   BENCH_DATA     data set path (folder or .tar.gz, see README "Data"); required
#   BENCH_CACHE    decoded-data cache staged by `make data` (read-only is fine)
#   BENCH_PRESET   smoke | cpu | full (default full)
#   BENCH_PYTHON   host Python when CIFAR_SIF is unset (default .venv/bin/python, else python3)
#   BENCH_DEVICES  optional; must equal the tasks per node (one DDP rank per device) if set
#   BENCH_ROUNDS   rounds of each case (default 1), interleaved: round 1 of every case, then round 2, ...
#   BENCH_BASELINE this system's stored baseline (baselines/NAME.json or a path) for a verdict; unset = no verdict
#   EXTRA_PYTEST_ARGS  more suite options, e.g. "--bench-arg=--accelerator=cpu"
# Time limit: Slurm sends SIGUSR1 to this batch shell 120 s before the end (--signal=B:USR1@120);
# finished cases keep their JSON, the running one is stopped and marked `interrupted`, and nothing
# is requeued (--no-requeue here, SLURMEnvironment(auto_requeue=False) in the runs).
# scancel (or the time limit reached): SIGTERM, then SIGKILL after KillWait (docs/slurm.md assumes >= 5 s):
# every step that did not finish gets an `interrupted` record from the torch-free writer
# (bench/results/endrecords.py, about 1 s), the report is left to the command printed, and the exit line follows.
# Exit status (bench/core/exitcodes.py, docs/exit-codes.md): 0 every case ok or skipped, 1 a case failed,
# 2 refused before launch, 3 a sanity check failed, 4 interrupted; the worst case's wins.
#
#SBATCH --job-name=cifar-bench
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --gres=gpu:2
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
#SBATCH --output=slurm-%j.out
#SBATCH --signal=B:USR1@120
#SBATCH --no-requeue
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-.}"
SCRIPT=suite.sh
[ -f slurm/common.sh ] || { echo "$SCRIPT: error: submit from the repository root (slurm/common.sh not found in $PWD)" >&2; exit 2; }
# shellcheck source=slurm/common.sh
source slurm/common.sh
RUN_DIR=${BENCH_RUNS:-runs}/slurm-$SLURM_JOB_ID
BASELINE=${BENCH_BASELINE:-}
REFERENCE=a100-2node  # the shipped reference (2 nodes x 2 A100): another system, shown for information only
ROUNDS=${BENCH_ROUNDS:-1}
CASES=(baseline dp ddp)

# --- checks before anything launches -------------------------------------------------------------
check_job
if [ -n "${BENCH_DEVICES:-}" ] && [ "$BENCH_DEVICES" -ne "$TASKS_PER_NODE" ]; then
    die "BENCH_DEVICES=$BENCH_DEVICES differs from --ntasks-per-node=$TASKS_PER_NODE; set them equal (or unset BENCH_DEVICES)"
fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS=$ROUNDS is not a whole number >= 1"
read -ra extra_args <<< "${EXTRA_PYTEST_ARGS:-}"  # e.g. "--bench-arg=--accelerator=cpu"
for arg in "${extra_args[@]}"; do
    case $arg in --bench-rounds*) die "set BENCH_ROUNDS=N instead of --bench-rounds in EXTRA_PYTEST_ARGS (the job interleaves the rounds, one step each)" ;; esac
done

choose_runtime
mkdir -p "$RUN_DIR"
echo "suite.sh: job $SLURM_JOB_ID, $NODES node(s) x $TASKS_PER_NODE task(s), $GPUS_PER_NODE GPU(s)/node, preset $PRESET, $ROUNDS round(s), results in $RUN_DIR"
echo "suite.sh: code from the checkout $PWD (commit ${BENCH_SOURCE_COMMIT:-unknown}${CIFAR_SIF:+, run in $CIFAR_SIF ${BENCH_IMAGE_ID:-}})"

# --- the steps -----------------------------------------------------------------------------------
# (the signal traps, wait_step and HOST_PY: slurm/common.sh)
current_case="" current_round=0 steps_started=0
finished=()  # "case:round" of every step that ended on its own (ok, skipped or failed), in order

# run_case CASE ROUND SRUN_OPTIONS... : one srun step of pytest running one round of one case.
# --kill-on-bad-exit: when one task (rank) exits non-zero, srun kills the others, so no rank waits
# for a dead one; srun's own lines ("srun: error: node2: task 3: Killed") name the lost ranks and
# are kept in $RUN_DIR/srun-CASE[-roundR].err for report_case.
run_case() {
    local case=$1 round=$2 select=(suite -k "test_$1"); shift 2
    [ "$ROUNDS" -gt 1 ] && select=("suite/test_cases.py::test_${case}[round${round}]")
    current_case=$case current_round=$round STOPPING="case '$case' (round $round)"
    srun --kill-on-bad-exit=1 --cpus-per-task="$CPUS_PER_TASK" "$@" \
        "${RUN[@]}" -m pytest "${select[@]}" -p no:cacheprovider -q \
        --bench-preset "$PRESET" --bench-data "$BENCH_DATA" --bench-out "$RUN_DIR" --bench-rounds "$ROUNDS" \
        --benchmark-json "$RUN_DIR/suite-$(step_name "$case" "$round").json" "${extra_args[@]}" \
        2> >(tee "$RUN_DIR/srun-$(step_name "$case" "$round").err" >&2) &
    step_pid=$! steps_started=$((steps_started + 1))
    local status=0
    wait_step || status=$?
    [ "$interrupted" = 1 ] && return 1
    return "$status"
}

# step_name CASE ROUND: "ddp" with one round, "ddp-round2" with several (pytest-benchmark JSON, srun's lines)
step_name() { [ "$ROUNDS" -gt 1 ] && echo "$1-round$2" || echo "$1"; }
# step_records CASE ROUND: the records of that step (the suite's run id ends "-r<ROUND-1>")
step_records() { compgen -G "$RUN_DIR/$1-job$SLURM_JOB_ID.*-r$(($2 - 1)).json" || true; }

# gres N: the --gres option of a step using N GPUs per node (none on a job without GPUs)
gres() { [ "$GPUS_PER_NODE" -gt 0 ] && echo "--gres=gpu:$1" || echo "--gres=none"; }

# Exit codes: bench/core/exitcodes.py (docs/exit-codes.md). The job's status is the worst case's:
# 4 interrupted > 1 failed > 3 sanity > 0.
EXIT_FAILED=1 EXIT_SANITY=3 EXIT_INTERRUPTED=4
worst=0
severity() { case $1 in 4) echo 4 ;; 1) echo 3 ;; 3) echo 2 ;; 2) echo 1 ;; *) echo 0 ;; esac; }
worse() { [ "$(severity "$1")" -gt "$(severity "$worst")" ] && worst=$1; return 0; }  # keep the worst status

# report_case CASE ROUND STATUS: say in the job output how the step ended (its result's status and
# reason, srun's lines naming lost tasks); write a `failed` record when the step left none (rank 0 was lost).
report_case() {
    local case=$1 round=$2 status=$3 files lost err
    err="$RUN_DIR/srun-$(step_name "$case" "$round").err"
    [ "$terminated" = 1 ] || sleep 1  # let tee finish writing srun's last lines (no time after SIGTERM)
    mapfile -t files < <(step_records "$case" "$round")
    lost=$(grep -E "^srun: error: .*task" "$err" 2>/dev/null | sed 's/^srun: error: //' | paste -sd ';' - || true)
    if [ "${#files[@]}" -gt 0 ]; then
        grep -q '"status": "interrupted"' "${files[@]}" && worse $EXIT_INTERRUPTED
        grep -q '"status": "failed"' "${files[@]}" && worse $EXIT_FAILED
        grep -q '"passed": false' "${files[@]}" && worse $EXIT_SANITY
    fi
    [ "$interrupted" = 0 ] && finished+=("$case:$round")
    [ "$status" = 0 ] && return 0
    if [ "$interrupted" = 1 ] && [ "${#files[@]}" -gt 0 ] && ! grep -q '"status": "interrupted"' "${files[@]}"; then
        echo "suite.sh: case '$case' (round $round) had written its record when the job was stopped: kept"
        return 0
    fi
    local end=failed code=$EXIT_FAILED
    # the suite's step exits with its case's status (docs/exit-codes.md): 3 is a sanity failure, not a fault
    [ "$status" = "$EXIT_SANITY" ] && end="failed its sanity check" code=$EXIT_SANITY
    # scancel of the step (SIGKILL to every task) or of the job: stopped from outside
    if [ "$interrupted" = 1 ] || grep -q "CANCELLED" "$err" 2>/dev/null; then
        end=interrupted code=$EXIT_INTERRUPTED
    fi
    echo "suite.sh: case '$case' $end (round $round, srun step exit $status)${lost:+; lost: $lost}"
    if [ "${#files[@]}" -eq 0 ] && [ "$interrupted" = 0 ]; then  # no rank could write it: the script does
        end_records "$end" "" "$case:$round:srun step exited $status with no result from rank 0${lost:+; srun: $lost}"
    fi
    for f in "${files[@]}"; do
        grep -m1 '"reason": "' "$f" | sed "s|^ *|suite.sh: $case: |" || true
    done
    worse "$code"
}

# end_records STATUS RUNNING STEP...: the torch-free writer (bench/results/endrecords.py, on this host):
# a STATUS record for each STEP ("case:round:reason") that has none; RUNNING ("case:round:step id", or
# empty) is given 2 s for its ranks' own record first, and ours takes the step's run id.
end_records() {
    local status=$1 running=$2 step args=()
    shift 2
    for step; do args+=(--step "$step"); done
    [ -n "$running" ] && args+=(--running "$running")
    "$HOST_PY" -m bench.results.endrecords --out "$RUN_DIR" --job "$SLURM_JOB_ID" --preset "$PRESET" \
        --data "$BENCH_DATA" --status "$status" --nodes "$NODES" --tasks-per-node "$TASKS_PER_NODE" \
        --gpus-per-node "$GPUS_PER_NODE" "${args[@]}" | sed 's/^/suite.sh: /' || true
}

# skipped_in_round_1 CASE: its first round was skipped on this hardware (dp without GPUs): not run again
skipped_in_round_1() {
    local files
    mapfile -t files < <(step_records "$1" 1)
    # the record's own status, read as JSON: a grep for '"status": "skipped"' also matched a ddp record's
    # skipped interconnect check (smoke preset), and ddp's later rounds never ran
    [ "${#files[@]}" -gt 0 ] && "$HOST_PY" -S -c 'import json, sys
sys.exit(0 if any(json.load(open(f)).get("status") == "skipped" for f in sys.argv[1:]) else 1)' "${files[@]}"
}

# run_round ROUND: one step of every case, in the suite's order; dp only while it was not skipped.
run_round() {
    local round=$1 case status
    for case in "${CASES[@]}"; do
        [ "$interrupted" = 1 ] && return 0
        [ "$round" -gt 1 ] && skipped_in_round_1 "$case" && continue  # skipped on this hardware
        status=0
        case $case in
            ddp) run_case ddp "$round" -N"$NODES" --ntasks-per-node="$TASKS_PER_NODE" "$(gres "$GPUS_PER_NODE")" || status=$? ;;
            dp) run_case dp "$round" -N1 -n1 --ntasks-per-node=1 "$(gres "$GPUS_PER_NODE")" || status=$? ;;
            *) run_case "$case" "$round" -N1 -n1 --ntasks-per-node=1 "$(gres 1)" || status=$? ;;
        esac
        report_case "$case" "$round" "$status"
    done
}

for ((round = 1; round <= ROUNDS; round++)); do
    [ "$ROUNDS" -gt 1 ] && [ "$interrupted" = 0 ] && echo "suite.sh: round $round of $ROUNDS"
    run_round "$round"
done
if [ "$ROUNDS" -gt 1 ]; then
    echo "suite.sh: order of the rounds (interleaved): ${finished[*]}"
    printf '%s\n' "${finished[@]}" > "$RUN_DIR/order.txt"  # one "case:round" a line
fi

# mark_unfinished: after SIGUSR1 or SIGTERM, every step that did not end on its own gets an
# `interrupted` record (the running one, and those never started), so nothing looks finished.
mark_unfinished() {
    local round case steps=() running=""
    for ((round = 1; round <= ROUNDS; round++)); do
        for case in "${CASES[@]}"; do
            [[ " ${finished[*]} " == *" $case:$round "* ]] && continue
            [ "$round" -gt 1 ] && skipped_in_round_1 "$case" && continue  # would not have run
            if [ "$case:$round" = "$current_case:$current_round" ]; then
                steps+=("$case:$round:stopped: $STOP_WHY")
                running="$case:$round:$((steps_started - 1))"
            else
                steps+=("$case:$round:not started: $STOP_WHY")
            fi
        done
    done
    [ "${#steps[@]}" -gt 0 ] && end_records interrupted "$running" "${steps[@]}"
    return 0
}
[ "$interrupted" = 1 ] && mark_unfinished

# --- comparison and report (rank-0 results only) ------------------------------------------------
shopt -s nullglob
results=("$RUN_DIR"/*-job"$SLURM_JOB_ID".*.json)  # per-run results, skipped cases included
shopt -u nullglob
report_cmd=(cifar-bench report "$RUN_DIR/*-job$SLURM_JOB_ID.*.json" ${BASELINE:+--baseline "$BASELINE"} --out "$RUN_DIR")
if [ "${#results[@]}" -gt 0 ] && [ "$terminated" = 0 ]; then
    if [ -n "$BASELINE" ]; then
        echo "suite.sh: comparison with this system's baseline '$BASELINE'"
        "${RUN[@]}" -m bench compare "${results[@]}" --baseline "$BASELINE" || echo "suite.sh: compare exit $?"
    else
        echo "suite.sh: no verdict: name this system's own baseline with BENCH_BASELINE (record one: cifar-bench baseline record, docs/baselines.md); for information only, the shipped reference '$REFERENCE' is another system: cifar-bench compare RESULTS --baseline $REFERENCE"
    fi
    "${RUN[@]}" -m bench report "${results[@]}" ${BASELINE:+--baseline "$BASELINE"} --out "$RUN_DIR" \
        || echo "suite.sh: report exit $?"
fi
if [ "${#results[@]}" -gt 0 ] && { [ "$terminated" = 1 ] || [ ! -f "$RUN_DIR/report.md" ]; }; then
    echo "suite.sh: no report made (no time before SIGKILL); make it with: ${report_cmd[*]}"
fi
[ "$interrupted" = 1 ] && { echo "suite.sh: interrupted; finished cases are in $RUN_DIR"; worse $EXIT_INTERRUPTED; }
echo "suite.sh: exit $worst (bench/core/exitcodes.py: 0 ok, 1 failed, 2 bad input, 3 sanity, 4 interrupted, 5 no valid run)"
exit "$worst"
