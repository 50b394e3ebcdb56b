#!/usr/bin/env bash
# Run: sbatch slurm/scaling.sh          (from the repository root)
#   e.g. CIFAR_SIF=cifar.sif BENCH_DATA=/scratch/cifar10 sbatch -N 4 --ntasks-per-node=4 --gres=gpu:4 slurm/scaling.sh
#        BENCH_SCALING=weak EXTRA_RUN_ARGS="--train-samples 10000" BENCH_REPEATS=3 sbatch slurm/scaling.sh
#
# Scaling sweep of the ddp case in ONE allocation: every point is its own srun step with its own
# geometry (-N, --ntasks-per-node, --cpus-per-task, --gres), one result JSON per run in
# runs/scaling-<jobid>/ (override the parent with BENCH_RUNS), then `cifar-bench sweep
# --from-results` writes sweep.json, sweep.md and sweep.png there (docs/scaling.md).
# Points, as NODESxTASKS_PER_NODE with T = the job's tasks per node (= GPUs per node):
#   1x1, 1xT, then for n = 2, 4, 8, ... and the job's node count: nx1, nxT
#   (the default job, 2 nodes x 2: 1x1 1x2 2x1 2x2); BENCH_POINTS="1x1 1x4 2x4" chooses others.
# Environment:
#   CIFAR_SIF      Apptainer image (make image); unset = the host's Python (.venv if present)
#   BENCH_DATA     data set path (folder or .tar.gz, see README "Data"); required
#   BENCH_CACHE    decoded-data cache staged by `make data` (read-only is fine)
#   BENCH_PRESET   smoke | cpu | full (default full)
#   BENCH_PYTHON   host Python when CIFAR_SIF is unset (default .venv/bin/python, else python3)
#   BENCH_SCALING  strong (default: same global work at every point) | weak (same work per device;
#                  needs --train-samples in EXTRA_RUN_ARGS: the 1-device point's images)
#   BENCH_REPEATS  runs per point (default 1), interleaved: every point once, then again
#   BENCH_POINTS   space-separated NODESxTASKS_PER_NODE points (default above)
#   EXTRA_RUN_ARGS more `cifar-bench run` options, e.g. "--train-samples 2000 --accelerator cpu"
# Time limit: Slurm sends SIGUSR1 to this batch shell 120 s before the end (--signal=B:USR1@120);
# finished runs keep their JSON, the running one is stopped and every run not finished is recorded
# as `interrupted`; the summary is still written; nothing is requeued. Exit status (bench/core/exitcodes.py):
# 4 interrupted, 1 a run failed, 3 a sanity check failed, 2 bad input (nothing launched), else 0.
#
#SBATCH --job-name=cifar-scaling
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
SCRIPT=scaling.sh
[ -f slurm/common.sh ] || { echo "$SCRIPT: error: submit from the repository root (slurm/common.sh not found in $PWD)" >&2; exit 2; }
# shellcheck source=slurm/common.sh
source slurm/common.sh
SCALING=${BENCH_SCALING:-strong}
REPEATS=${BENCH_REPEATS:-1}
RUN_DIR=${BENCH_RUNS:-runs}/scaling-$SLURM_JOB_ID

# default_points: 1x1 1xT, then nx1 nxT for n = 2, 4, ... and the job's node count (no duplicates)
default_points() {
    local n=2 counts=() out=() c
    while [ "$n" -lt "$NODES" ]; do counts+=("$n"); n=$((n * 2)); done
    [ "$NODES" -gt 1 ] && counts+=("$NODES")
    out=(1x1); [ "$TASKS_PER_NODE" -gt 1 ] && out+=("1x$TASKS_PER_NODE")
    for c in "${counts[@]}"; do
        out+=("${c}x1"); [ "$TASKS_PER_NODE" -gt 1 ] && out+=("${c}x$TASKS_PER_NODE")
    done
    echo "${out[@]}"
}
read -ra POINTS <<< "${BENCH_POINTS:-$(default_points)}"
read -ra extra_args <<< "${EXTRA_RUN_ARGS:-}"

# --- checks before anything launches -------------------------------------------------------------
check_job
case "$SCALING" in strong|weak) ;; *) die "BENCH_SCALING=$SCALING is not strong or weak" ;; esac
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEATS=$REPEATS is not a number >= 1"
for point in "${POINTS[@]}"; do
    [[ "$point" =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || die "point '$point' is not NODESxTASKS_PER_NODE (e.g. 2x4)"
    if [ "${BASH_REMATCH[1]}" -gt "$NODES" ] || [ "${BASH_REMATCH[2]}" -gt "$TASKS_PER_NODE" ]; then
        die "point $point does not fit the job's $NODES node(s) x $TASKS_PER_NODE task(s); submit a bigger job or change BENCH_POINTS"
    fi
done

choose_runtime
run_opts=(--case ddp --preset "$PRESET" --data "$BENCH_DATA" --scaling "$SCALING" --out "$RUN_DIR" "${extra_args[@]}")
# every point's configuration is checked (e.g. a global batch that 3 ranks cannot split) before any srun
"${RUN[@]}" -m bench sweep "${run_opts[@]}" --points "$(IFS=,; echo "${POINTS[*]}")" --check-only \
    || die "a point's configuration is invalid (see above); nothing was launched"
mkdir -p "$RUN_DIR"
echo "scaling.sh: job $SLURM_JOB_ID, $NODES node(s) x $TASKS_PER_NODE task(s), $GPUS_PER_NODE GPU(s)/node, preset $PRESET, $SCALING scaling, points ${POINTS[*]} x $REPEATS, results in $RUN_DIR"

# --- the time-limit signal -----------------------------------------------------------------------
# (on_usr1 and wait_step: slurm/common.sh)
STOPPING="the running point"

# gres N: the --gres option of a step using N GPUs per node (none on a job without GPUs)
gres() { [ "$GPUS_PER_NODE" -gt 0 ] && echo "--gres=gpu:$1" || echo "--gres=none"; }
results_now() { find "$RUN_DIR" -maxdepth 1 -name 'ddp-*.json' | wc -l; }

# run_point NODES TASKS_PER_NODE: one srun step of `cifar-bench run` with that geometry; its status
run_point() {
    local nodes=$1 tasks=$2 status=0
    srun --kill-on-bad-exit=1 -N"$nodes" -n$((nodes * tasks)) --ntasks-per-node="$tasks" \
        --cpus-per-task="$CPUS_PER_TASK" "$(gres "$tasks")" \
        "${RUN[@]}" -m bench run "${run_opts[@]}" --devices "$tasks" --num-nodes "$nodes" &
    step_pid=$!
    wait_step || status=$?
    return "$status"
}

# mark REASON POINT...: record each run that did not finish as `interrupted` (its geometry included)
mark() {
    local reason=$1; shift
    [ "$#" -gt 0 ] || return 0
    "${RUN[@]}" -m bench sweep "${run_opts[@]}" --points "$(IFS=,; echo "$*")" --mark-interrupted "$reason" || true
}

codes=()
for ((r = 0; r < REPEATS; r++)); do
    for i in "${!POINTS[@]}"; do
        point=${POINTS[$i]}
        if [ "$interrupted" = 1 ]; then  # not started: every remaining run of this repeat
            mark "not started: the Slurm time limit was near (SIGUSR1)" "${POINTS[@]:$i}"
            break
        fi
        echo "scaling.sh: point $point, repeat $((r + 1))/$REPEATS"
        before=$(results_now)
        status=0
        run_point "${point%x*}" "${point#*x}" || status=$?
        codes+=("$status")
        if [ "$interrupted" = 1 ] && [ "$(results_now)" -eq "$before" ]; then  # stopped before its own record
            mark "stopped by the Slurm time limit (SIGUSR1)" "$point"
        fi
    done
done

# --- summary (sweep.json, sweep.md, sweep.png) ---------------------------------------------------
shopt -s nullglob
results=("$RUN_DIR"/ddp-*.json)
summary=0
if [ "${#results[@]}" -gt 0 ]; then
    "${RUN[@]}" -m bench sweep --from-results "${results[@]}" --out "$RUN_DIR" || summary=$?
fi
[ "$interrupted" = 1 ] && { echo "scaling.sh: interrupted; finished runs are in $RUN_DIR"; exit 4; }
worst=0
for code in "${codes[@]}" "$summary"; do  # 4 > 1 > 3 > 2 > 0 (docs/exit-codes.md)
    case "$code" in 0) ;; 4) worst=4 ;; 3) [ "$worst" = 0 ] || [ "$worst" = 2 ] && worst=3 ;;
        2) [ "$worst" = 0 ] && worst=2 ;; *) [ "$worst" != 4 ] && worst=1 ;; esac
done
exit "$worst"
