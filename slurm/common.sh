# shellcheck shell=bash disable=SC2034  # (the variables set here are read by the scripts that source it)
# Sourced by slurm/suite.sh and slurm/scaling.sh (after `cd "$SLURM_SUBMIT_DIR"`, the repository root):
#   SCRIPT=suite.sh; source slurm/common.sh
# The job's geometry, the checks before anything launches, and the Python that runs the ranks,
# kept in one place so the two jobs cannot drift. Exit status 2 (bench/core/exitcodes.py BAD_INPUT) on a
# refusal: nothing was launched.

die() { echo "$SCRIPT: error: $*" >&2; exit 2; }
[ -n "${SLURM_JOB_ID:-}" ] || die "run this with sbatch (see the first line of this script)"

# A run id comes from this job (Slurm's job and step ids, or the suite's per case), never from the
# shell that submitted it: sbatch exports the submitter's environment, a left-over BENCH_RUN_ID too.
unset BENCH_RUN_ID
PRESET=${BENCH_PRESET:-full}
NODES=${SLURM_JOB_NUM_NODES:?}
TASKS_PER_NODE=${SLURM_NTASKS_PER_NODE%%(*}  # "2(x2)" -> "2"
CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-0}

# check_job: the data set is there and the GPUs are laid out as DDP needs (one task per GPU, every
# task seeing all GPUs of its node).
check_job() {
    [ -n "${BENCH_DATA:-}" ] || die "set BENCH_DATA to the data set; stage it first with: cifar-bench data download DIR (on a login node) or make data"
    [ -e "$BENCH_DATA" ] || die "no data at BENCH_DATA=$BENCH_DATA; stage it first with: cifar-bench data download DIR (on a login node) or make data"
    # One place decides the devices Lightning is told: the tasks per node. GPUs per node must match it.
    if [ "$GPUS_PER_NODE" -gt 0 ] && [ "$TASKS_PER_NODE" -ne "$GPUS_PER_NODE" ]; then
        die "--ntasks-per-node=$TASKS_PER_NODE but --gres=gpu:$GPUS_PER_NODE: DDP runs one task per GPU; submit with --ntasks-per-node=$GPUS_PER_NODE"
    fi
    # Every task must see all GPUs of its node: a DDP rank picks cuda:<local rank> among them, dp uses them all.
    if [ -n "${SLURM_GPUS_PER_TASK:-}" ]; then
        die "--gpus-per-task=$SLURM_GPUS_PER_TASK shows each task only its own GPU, but each DDP rank picks cuda:<local rank> among the node's GPUs; submit with --gres=gpu:N --ntasks-per-node=N and without --gpus-per-task (docs/gpu-clusters.md)"
    fi
    case ${SLURM_GPU_BIND:-none} in
        *none*) ;;
        *) die "--gpu-bind=$SLURM_GPU_BIND hides the node's other GPUs from each task; submit without --gpu-bind (or --gpu-bind=none), see docs/gpu-clusters.md" ;;
    esac
}

# choose_runtime: RUN=(the command that runs `python`), the image (CIFAR_SIF) or the host's Python;
# exports what bench/measure/environment.py records about the code that really runs.
choose_runtime() {
    if [ -n "${CIFAR_SIF:-}" ]; then
        [ -f "$CIFAR_SIF" ] || die "CIFAR_SIF=$CIFAR_SIF does not exist; build it with: make image"
        local data_dir binds
        data_dir=$(cd "$(dirname "$BENCH_DATA")" && pwd)
        binds=(--bind "$data_dir:$data_dir:ro" --bind "$PWD")
        [ -n "${BENCH_CACHE:-}" ] && binds+=(--bind "$BENCH_CACHE:$BENCH_CACHE:ro")  # staged by make data
        if [ -n "${BENCH_RUNS:-}" ]; then  # results outside the checkout: the ranks write there
            mkdir -p "$BENCH_RUNS" && binds+=(--bind "$(cd "$BENCH_RUNS" && pwd)")
        fi
        RUN=(apptainer exec --nv "${binds[@]}" --pwd "$PWD" "$CIFAR_SIF" python)
        export BENCH_IMAGE=$CIFAR_SIF
        # The image's identity for every rank's record (environment.container_image_id): read here, on the
        # host, once per job (the image cannot read its own SIF header); apptainer passes it to each rank.
        if [ -z "${BENCH_IMAGE_ID:-}" ]; then
            BENCH_IMAGE_ID=$(bash container/image-id.sh "$CIFAR_SIF") \
                || echo "$SCRIPT: warning: no image identity for $CIFAR_SIF (set BENCH_IMAGE_ID=\$(bash container/image-id.sh --digest $CIFAR_SIF))" >&2
            export BENCH_IMAGE_ID
        fi
    else
        RUN=("$HOST_PY")
    fi
    # The code that runs is this checkout (bound into the image at $PWD, where `python -m` imports it
    # ahead of the image's installed copy). The image has no git, so its commit is read here and
    # recorded by bench/measure/environment.py (git_commit_source), never the image's baked-in BENCH_GIT_COMMIT.
    BENCH_SOURCE_DIR=$PWD
    BENCH_SOURCE_COMMIT=$(git -C "$PWD" rev-parse HEAD 2>/dev/null || true)
    BENCH_SOURCE_DIRTY=""
    if [ -n "$BENCH_SOURCE_COMMIT" ]; then
        [ -z "$(git -C "$PWD" status --porcelain --untracked-files=no 2>/dev/null)" ] && BENCH_SOURCE_DIRTY=0 || BENCH_SOURCE_DIRTY=1
    fi
    export BENCH_SOURCE_DIR BENCH_SOURCE_COMMIT BENCH_SOURCE_DIRTY
}

# --- the signals: Slurm sends SIGUSR1 to this batch shell 120 s before the time limit
# (--signal=B:USR1@120): the running srun step is stopped, bounded, and the scripts record what did not
# finish. scancel, or the time limit reached, sends SIGTERM to this shell and to every step's tasks at
# once, then SIGKILL KillWait seconds later (5 on the local cluster, slurm/cluster/slurm.conf; 30 by
# default) and no new step can start: the steps are already being stopped, so nothing is waited for
# (terminated=1) and the scripts write their records with the torch-free writer on this host (HOST_PY).
step_pid=""
interrupted=0
terminated=0
STOPPING="the running step"  # what on_usr1 says it stops; the scripts set it as they go
STOP_WHY=""                  # why the job stops, in words, for the records
# shellcheck disable=SC2329  # invoked through the traps below
on_usr1() {
    interrupted=1 STOP_WHY="the Slurm time limit was near (SIGUSR1)"
    echo "$SCRIPT: SIGUSR1 (time limit near): stopping $STOPPING"
    [ -n "$step_pid" ] && kill -TERM "$step_pid" 2>/dev/null || true
}
# shellcheck disable=SC2329
on_term() {
    interrupted=1 terminated=1 STOP_WHY="the job was stopped by Slurm (SIGTERM: scancel, or the time limit reached)"
    echo "$SCRIPT: SIGTERM (scancel or time limit): $STOPPING stops; recording what did not finish before SIGKILL"
}
trap on_usr1 USR1
trap on_term TERM

# The Python on this (batch) host for the torch-free record writer: BENCH_PYTHON, else the checkout's
# .venv, else python3 (bench.results.endrecords needs only the standard library).
HOST_PY=${BENCH_PYTHON:-}
[ -n "$HOST_PY" ] || { [ -x .venv/bin/python ] && HOST_PY=.venv/bin/python; } || HOST_PY=python3

# wait_step: wait for the srun step in $step_pid and return its status. A trapped signal makes `wait`
# return early; after SIGUSR1 wait again, bounded (60 s), and kill what is left of the step; after
# SIGTERM Slurm stops the step itself.
wait_step() {
    local status=0
    wait "$step_pid" || status=$?
    if [ "$interrupted" = 1 ] && [ "$terminated" = 0 ]; then
        for _ in $(seq 1 60); do  # (a SIGTERM meanwhile, the time limit reached: no more waiting)
            kill -0 "$step_pid" 2>/dev/null && [ "$terminated" = 0 ] || break
            sleep 1
        done
        kill -KILL "$step_pid" 2>/dev/null || true
    fi
    step_pid=""
    return "$status"
}
