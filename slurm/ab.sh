#!/usr/bin/env bash
# Run: sbatch slurm/ab.sh          (from the repository root)
#   e.g. AB_A_SIF=old.sif AB_B_SIF=new.sif BENCH_DATA=/scratch/cifar10 sbatch -N2 --ntasks-per-node=4 --gres=gpu:4 slurm/ab.sh
#        AB_B_ENV="NCCL_ALGO=Ring NCCL_PROTO=Simple" AB_PAIRS=7 sbatch slurm/ab.sh
#        AB_B_PYTHON=/opt/new-env/bin/python AB_CASE=baseline sbatch slurm/ab.sh
#
# "Is B slower than A?" inside ONE allocation, so both sides use the same nodes: `cifar-bench ab`
# (docs/ab.md) runs AB_PAIRS pairs of AB_CASE, each run its own srun step, in the order AB, BA, AB, ...
# Results: runs/ab-<jobid>/A and .../B (one result JSON per run; override the parent with BENCH_RUNS)
# and runs/ab-<jobid>/ab.json; the job output ends with the median ratio B/A, its interval, the verdict
# and what differs between A's and B's recorded environments.
# A side is, by priority: AB_x_CMD (a command that runs Python, used as given), AB_x_SIF (an Apptainer
# image, run as `apptainer exec --nv` with the binds of slurm/suite.sh), AB_x_PYTHON (another venv or
# checkout's python), else the default runtime (CIFAR_SIF, else the host's Python), for x = A, B.
# Environment:
#   BENCH_DATA     data set path (folder or .tar.gz, see README "Data"); required
#   BENCH_CACHE    decoded-data cache staged by `make data` (read-only is fine)
#   BENCH_PRESET   smoke | cpu | full (default full)
#   BENCH_PYTHON   host Python that runs `cifar-bench ab` itself (default .venv/bin/python, else python3)
#   AB_CASE        baseline (1 task, 1 GPU) | dp (1 task, the node's GPUs) | ddp (all nodes, one task
#                  per GPU; default)
#   AB_PAIRS       pairs of runs (default 5; 3 or more for a verdict); fixed in advance (docs/ab.md)
#   AB_A_ENV, AB_B_ENV    space-separated NAME=VALUE set for that side's runs, e.g. "NCCL_ALGO=Ring"
#   AB_A_ARGS, AB_B_ARGS  that side's own `cifar-bench run` options (the work must stay the same)
#   AB_TOLERANCE   allowed slowdown of B in percent (default 10)
#   EXTRA_RUN_ARGS more `cifar-bench run` options for both sides, e.g. "--train-samples 2000"
# Time limit: Slurm sends SIGUSR1 to this batch shell 120 s before the end (--signal=B:USR1@120); the
# running step is stopped (its run recorded as interrupted), ab.json keeps the pairs that ran
# (judge them with `cifar-bench ab --from-results`), exit 4; nothing is requeued.
# Exit status: `cifar-bench ab`'s (docs/exit-codes.md): 0 no regression, 1 B is a regression,
# 2 refused before launch, 4 interrupted, 5 no pair with valid runs on both sides, 6 nothing judged.
#
#SBATCH --job-name=cifar-ab
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
SCRIPT=ab.sh
[ -f slurm/common.sh ] || { echo "$SCRIPT: error: submit from the repository root (slurm/common.sh not found in $PWD)" >&2; exit 2; }
# shellcheck source=slurm/common.sh
source slurm/common.sh
RUN_DIR=${BENCH_RUNS:-runs}/ab-$SLURM_JOB_ID
CASE=${AB_CASE:-ddp}
PAIRS=${AB_PAIRS:-5}

# --- checks before anything launches -------------------------------------------------------------
check_job
case "$CASE" in baseline|dp|ddp) ;; *) die "AB_CASE=$CASE is not baseline, dp or ddp" ;; esac
[[ "$PAIRS" =~ ^[1-9][0-9]*$ ]] || die "AB_PAIRS=$PAIRS is not a number >= 1"
ORCHESTRATOR=${BENCH_PYTHON:-}
[ -n "$ORCHESTRATOR" ] || { [ -x .venv/bin/python ] && ORCHESTRATOR=.venv/bin/python; } || ORCHESTRATOR=python3

# side_command x: the command line (one word list, shell-quoted) that runs Python for side x (A or B)
side_command() {
    local cmd_var="AB_$1_CMD" sif_var="AB_$1_SIF" py_var="AB_$1_PYTHON"
    if [ -n "${!cmd_var:-}" ]; then echo "${!cmd_var}"; return; fi
    if [ -n "${!sif_var:-}" ]; then
        [ -f "${!sif_var}" ] || die "$sif_var=${!sif_var} does not exist; build it with: make image"
        CIFAR_SIF=${!sif_var} choose_runtime
    elif [ -n "${!py_var:-}" ]; then CIFAR_SIF="" BENCH_PYTHON=${!py_var} choose_runtime
    else choose_runtime; fi
    printf '%q ' "${RUN[@]}"
}
# side_env x: --x-env options, the side's variables and, for an image, what the image cannot read itself
side_env() {
    local env_var="AB_$1_ENV" sif_var="AB_$1_SIF" item low
    low=$(echo "$1" | tr AB ab)
    for item in ${!env_var:-}; do echo "--$low-env=$item"; done
    if [ -z "${!sif_var:-}" ]; then return; fi
    echo "--$low-env=BENCH_IMAGE=${!sif_var}"
    id=$(bash container/image-id.sh "${!sif_var}" 2>/dev/null) && echo "--$low-env=BENCH_IMAGE_ID=$id"
    return 0
}
# (in a subshell each: choose_runtime sets RUN; a refusal there exits the script through set -e)
A_CMD=$(side_command A)
B_CMD=$(side_command B)
choose_runtime  # here too, for what it exports about the checkout (BENCH_SOURCE_*); the image a side runs
unset BENCH_IMAGE  # in is recorded by the side itself (APPTAINER_CONTAINER, or BENCH_IMAGE in its --x-env)
mapfile -t A_ENV < <(side_env A)
mapfile -t B_ENV < <(side_env B)

# gres N: the --gres option of a step using N GPUs per node (none on a job without GPUs)
gres() { [ "$GPUS_PER_NODE" -gt 0 ] && echo "--gres=gpu:$1" || echo "--gres=none"; }
case "$CASE" in
    ddp) geometry=(-N"$NODES" --ntasks-per-node="$TASKS_PER_NODE" "$(gres "$TASKS_PER_NODE")")
         devices=(--devices "$TASKS_PER_NODE" --num-nodes "$NODES") ;;
    dp) geometry=(-N1 -n1 "$(gres "$GPUS_PER_NODE")"); devices=(--devices "$(( GPUS_PER_NODE > 0 ? GPUS_PER_NODE : 2 ))") ;;
    *) geometry=(-N1 -n1 "$(gres 1)"); devices=() ;;
esac
launcher="srun --kill-on-bad-exit=1 --cpus-per-task=$CPUS_PER_TASK ${geometry[*]}"
read -ra extra_args <<< "${EXTRA_RUN_ARGS:-}"
ab=("$ORCHESTRATOR" -m bench ab --cases "$CASE" --preset "$PRESET" --data "$BENCH_DATA" "${devices[@]}"
    "${extra_args[@]}" --pairs "$PAIRS" --tolerance "${AB_TOLERANCE:-10}" --out "$RUN_DIR" --launcher "$launcher"
    --a-cmd "$A_CMD" --b-cmd "$B_CMD" "${A_ENV[@]}" "${B_ENV[@]}")
[ -n "${AB_A_ARGS:-}" ] && ab+=("--a-args=$AB_A_ARGS")
[ -n "${AB_B_ARGS:-}" ] && ab+=("--b-args=$AB_B_ARGS")

echo "ab.sh: job $SLURM_JOB_ID, $NODES node(s) x $TASKS_PER_NODE task(s), $GPUS_PER_NODE GPU(s)/node, case $CASE, $PAIRS pair(s), preset $PRESET, results in $RUN_DIR"
# --- the pairs: one process that runs every step and then judges (SIGUSR1: common.sh's on_usr1
# sends it SIGTERM; it stops the running step and keeps ab.json) ---------------------------------------
STOPPING="the A/B pairs (the running step)"
"${ab[@]}" &
step_pid=$!
status=0
wait_step || status=$?
[ "$interrupted" = 1 ] && { echo "ab.sh: interrupted; finished pairs are in $RUN_DIR/ab.json"; exit 4; }
echo "ab.sh: exit $status"
exit "$status"
