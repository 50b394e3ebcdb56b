#!/usr/bin/env bash
# Run: sbatch slurm/suite.sh
#   e.g. CIFAR_SIF=cifar.sif BENCH_DATA=/scratch/cifar10 sbatch -p gpu -A myproject slurm/suite.sh
#        sbatch --nodes=4 --ntasks-per-node=4 --gres=gpu:4 slurm/suite.sh    (4 nodes x 4 GPUs)
#
# Runs the three cases of the suite, each as its own srun step, and writes one JSON per case into
# runs/slurm-<jobid>/ (override the parent with BENCH_RUNS), then the comparison with the stored
# baseline of this system (BENCH_BASELINE, default a100-2node) and report.md / report.png there.
#   baseline: 1 node, 1 task, 1 GPU    dp: 1 node, 1 task, all GPUs of the node
#   ddp:      all nodes, one task per GPU (Lightning's SLURMEnvironment reads rank/world size/master)
# Environment:
#   CIFAR_SIF      Apptainer image (make image); unset = the host's Python (.venv if present)
#   BENCH_DATA     data set path (folder or .tar.gz, see README "Data"); required
#   BENCH_CACHE    decoded-data cache staged by `make data` (read-only is fine)
#   BENCH_PRESET   smoke | cpu | full (default full)
#   BENCH_PYTHON   host Python when CIFAR_SIF is unset (default .venv/bin/python, else python3)
#   BENCH_DEVICES  optional; must equal the tasks per node (one DDP rank per device) if set
#   EXTRA_PYTEST_ARGS  more suite options, e.g. "--bench-rounds 3 --bench-arg=--accelerator=cpu"
# Time limit: Slurm sends SIGUSR1 to this batch shell 120 s before the end (--signal=B:USR1@120);
# finished cases keep their JSON, the running one is stopped and marked `interrupted`, and nothing
# is requeued (--no-requeue here, SLURMEnvironment(auto_requeue=False) in the runs).
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
BASELINE=${BENCH_BASELINE:-a100-2node}

# --- checks before anything launches -------------------------------------------------------------
check_job
if [ -n "${BENCH_DEVICES:-}" ] && [ "$BENCH_DEVICES" -ne "$TASKS_PER_NODE" ]; then
    die "BENCH_DEVICES=$BENCH_DEVICES differs from --ntasks-per-node=$TASKS_PER_NODE; set them equal (or unset BENCH_DEVICES)"
fi

choose_runtime
mkdir -p "$RUN_DIR"
echo "suite.sh: job $SLURM_JOB_ID, $NODES node(s) x $TASKS_PER_NODE task(s), $GPUS_PER_NODE GPU(s)/node, preset $PRESET, results in $RUN_DIR"
echo "suite.sh: code from the checkout $PWD (commit ${BENCH_SOURCE_COMMIT:-unknown}${CIFAR_SIF:+, run in $CIFAR_SIF})"

# --- the time-limit signal -----------------------------------------------------------------------
# (on_usr1 and wait_step: slurm/common.sh)
current_case=""

read -ra extra_args <<< "${EXTRA_PYTEST_ARGS:-}"  # e.g. "--bench-rounds 3"

# run_case CASE SRUN_OPTIONS... : one srun step of pytest running one case of the suite.
# --kill-on-bad-exit: when one task (rank) exits non-zero, srun kills the others, so no rank waits
# for a dead one; srun's own lines ("srun: error: node2: task 3: Killed") name the lost ranks and
# are kept in $RUN_DIR/srun-CASE.err for report_case.
run_case() {
    local case=$1; shift
    current_case=$case STOPPING="case '$case'"
    srun --kill-on-bad-exit=1 --cpus-per-task="$CPUS_PER_TASK" "$@" \
        "${RUN[@]}" -m pytest suite -p no:cacheprovider -q -k "test_$case" \
        --bench-preset "$PRESET" --bench-data "$BENCH_DATA" --bench-out "$RUN_DIR" \
        --benchmark-json "$RUN_DIR/suite-$case.json" "${extra_args[@]}" \
        2> >(tee "$RUN_DIR/srun-$case.err" >&2) &
    step_pid=$!
    local status=0
    wait_step || status=$?
    [ "$interrupted" = 1 ] && return 1
    return "$status"
}

# gres N: the --gres option of a step using N GPUs per node (none on a job without GPUs)
gres() { [ "$GPUS_PER_NODE" -gt 0 ] && echo "--gres=gpu:$1" || echo "--gres=none"; }

# Exit codes: bench/core/exitcodes.py (docs/exit-codes.md). The job's status is the worst case's:
# 4 interrupted > 1 failed > 3 sanity > 0.
EXIT_FAILED=1 EXIT_SANITY=3 EXIT_INTERRUPTED=4
worst=0
severity() { case $1 in 4) echo 4 ;; 1) echo 3 ;; 3) echo 2 ;; 2) echo 1 ;; *) echo 0 ;; esac; }
worse() { [ "$(severity "$1")" -gt "$(severity "$worst")" ] && worst=$1; return 0; }  # keep the worst status

# report_case CASE STATUS: say in the job output how the case ended (its result's status and reason,
# srun's lines naming lost tasks); write a `failed` record when the step left none (rank 0 was lost).
report_case() {
    local case=$1 status=$2 files lost
    sleep 1  # let tee finish writing srun's last lines
    shopt -s nullglob
    files=("$RUN_DIR/$case-job$SLURM_JOB_ID".*.json)
    shopt -u nullglob
    lost=$(grep -E "^srun: error: .*task" "$RUN_DIR/srun-$case.err" 2>/dev/null | sed 's/^srun: error: //' | paste -sd ';' - || true)
    if [ "${#files[@]}" -gt 0 ]; then
        grep -q '"status": "interrupted"' "${files[@]}" && worse $EXIT_INTERRUPTED
        grep -q '"status": "failed"' "${files[@]}" && worse $EXIT_FAILED
        grep -q '"passed": false' "${files[@]}" && worse $EXIT_SANITY
    fi
    [ "$status" = 0 ] && return 0
    local end=failed code=$EXIT_FAILED
    # the suite's step exits with its case's status (docs/exit-codes.md): 3 is a sanity failure, not a fault
    [ "$status" = "$EXIT_SANITY" ] && end="failed its sanity check" code=$EXIT_SANITY
    # scancel of the step (SIGKILL to every task) or of the job: stopped from outside
    if [ "$interrupted" = 1 ] || grep -q "CANCELLED" "$RUN_DIR/srun-$case.err" 2>/dev/null; then
        end=interrupted code=$EXIT_INTERRUPTED
    fi
    echo "suite.sh: case '$case' $end (srun step exit $status)${lost:+; lost: $lost}"
    if [ "${#files[@]}" -eq 0 ] && [ "$interrupted" = 0 ]; then  # no rank could write it: the script does
        BENCH_RUN_ID="$case-job$SLURM_JOB_ID.suite" "${RUN[@]}" -m bench mark-interrupted --status "$end" \
            --case "$case" --preset "$PRESET" --data "$BENCH_DATA" --out "$RUN_DIR" \
            --reason "srun step exited $status with no result from rank 0${lost:+; srun: $lost}" || true
    fi
    for f in "${files[@]}"; do
        grep -m1 '"reason"' "$f" | sed "s|^ *|suite.sh: $case: |" || true
    done
    worse "$code"
}

status=0
run_case baseline -N1 -n1 --ntasks-per-node=1 "$(gres 1)" || status=$?
report_case baseline "$status"
if [ "$interrupted" = 0 ]; then
    status=0
    run_case dp -N1 -n1 --ntasks-per-node=1 "$(gres "$GPUS_PER_NODE")" || status=$?
    report_case dp "$status"
fi
if [ "$interrupted" = 0 ]; then
    status=0
    run_case ddp -N"$NODES" --ntasks-per-node="$TASKS_PER_NODE" "$(gres "$GPUS_PER_NODE")" || status=$?
    report_case ddp "$status"
fi

# mark_unfinished: after the time-limit signal, every case without a result of its own gets an
# `interrupted` record (the running one, and those never started), so nothing looks finished.
mark_unfinished() {
    local case reason
    for case in baseline dp ddp; do
        compgen -G "$RUN_DIR/$case-*.json" >/dev/null && continue  # finished (or marked by the run)
        reason="not started: the Slurm time limit was near (SIGUSR1)"
        [ "$case" = "$current_case" ] && reason="stopped by the Slurm time limit (SIGUSR1)"
        BENCH_RUN_ID="$case-job$SLURM_JOB_ID.suite" \
        "${RUN[@]}" -m bench mark-interrupted --case "$case" --preset "$PRESET" --data "$BENCH_DATA" \
            --out "$RUN_DIR" --reason "$reason" || true
    done
}
[ "$interrupted" = 1 ] && mark_unfinished

# --- comparison and report (rank-0 results only) ------------------------------------------------
shopt -s nullglob
results=("$RUN_DIR"/*-job"$SLURM_JOB_ID".*.json)  # per-run results, skipped cases included
if [ "${#results[@]}" -gt 0 ]; then
    echo "suite.sh: comparison with baseline '$BASELINE'"
    "${RUN[@]}" -m bench compare "${results[@]}" --baseline "$BASELINE" || echo "suite.sh: compare exit $?"
    "${RUN[@]}" -m bench report "${results[@]}" --baseline "$BASELINE" --out "$RUN_DIR" \
        || echo "suite.sh: report exit $?"
fi
[ "$interrupted" = 1 ] && { echo "suite.sh: interrupted; finished cases are in $RUN_DIR"; exit $EXIT_INTERRUPTED; }
echo "suite.sh: exit $worst (bench/core/exitcodes.py: 0 ok, 1 failed, 2 bad input, 3 sanity, 4 interrupted, 5 no valid run)"
exit "$worst"
