#!/usr/bin/env bash
# Run: slurm/cluster.sh up|down|status|exec CMD...   (as root, from anywhere; state in $CLUSTER_DIR, default <repo>/.cluster)
#
# A real two-node Slurm cluster on this one machine, for tests of the Slurm path.
#   - network namespaces: `ctl` (slurmctld, clients, and a bridge) and `node1`, `node2` (one slurmd
#     each), joined by veth pairs to the bridge inside `ctl`; the private /24 exists only inside them,
#     nothing is added to the root namespace, and there is no route out.
#   - each daemon runs as: nsenter --net=/run/netns/NS unshare --uts --mount --propagation private,
#     with its own hostname and the cluster's hosts file bind-mounted on /etc/hosts
#     (`ip netns exec` would remount /sys, and slurmd then fails on /sys/fs/cgroup).
#   - nodes: CPUs as `slurmd -C` reports, Gres=gpu:2 (no GPU: gres.conf points File= at two
#     placeholder nodes in $CLUSTER_DIR/dev, since Slurm 22.05 drops file-less GPUs; see gres.conf.in).
#   - down keeps $CLUSTER_DIR/log for post-mortems; a fresh up wipes state, spool and slurm logs.
#
#   up       install slurm-wlm + munge if missing, start munge and the cluster, wait until 2 nodes are idle
#   down     stop the daemons by their pid files, kill what is left in the namespaces, delete them
#   status   sinfo per node (exit 3 when the cluster is down)
#   exec     run a client command (sbatch, srun, sinfo, squeue, scancel, ...) in the controller's
#            namespace with SLURM_CONF set, in the caller's working directory, e.g.
#            slurm/cluster.sh exec sbatch --wait job.sh
#
# Environment: CLUSTER_DIR (state folder), UP_TIMEOUT (seconds to wait for idle nodes, default 60).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
TEMPLATES=$SCRIPT_DIR/cluster
CLUSTER_DIR=${CLUSTER_DIR:-$REPO/.cluster}
UP_TIMEOUT=${UP_TIMEOUT:-60}

CTL_NS=ctl
NODES=(node1 node2)
SUBNET_PREFIX=10.199.77
CTL_ADDR=$SUBNET_PREFIX.1
declare -A NODE_ADDR=([node1]=$SUBNET_PREFIX.11 [node2]=$SUBNET_PREFIX.12)

CONF=$CLUSTER_DIR/slurm.conf
HOSTS=$CLUSTER_DIR/hosts
RUN_DIR=$CLUSTER_DIR/run
LOG_DIR=$CLUSTER_DIR/log
MUNGE_MARK=$RUN_DIR/munged.started-by-cluster

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

check_cluster_dir() {
    case $CLUSTER_DIR in
        /*) ;;
        *) die "CLUSTER_DIR must be an absolute path: $CLUSTER_DIR" ;;
    esac
    [[ $CLUSTER_DIR != / && $CLUSTER_DIR != *[[:space:]]* ]] \
        || die "CLUSTER_DIR must not be / and must not contain whitespace: $CLUSTER_DIR"
}

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, mounts, daemons)"; }

# --- processes ---------------------------------------------------------------------------------

# inode of a network namespace given as a file (/run/netns/NS or /proc/PID/ns/net); empty if absent
ns_inode() { stat -L -c %i "$1" 2>/dev/null || true; }

ns_exists() { [[ -e /run/netns/$1 ]]; }

# PID from a pid file, or nothing
read_pid() {
    local pid=""
    [[ -r $1 ]] && read -r pid <"$1" || true
    [[ $pid =~ ^[0-9]+$ ]] && printf '%s\n' "$pid" || true
}

# true if PID is alive and lives in network namespace NS (guards against reused PIDs)
alive_in_ns() {
    local pid=$1 ns=$2 want
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    want=$(ns_inode "/run/netns/$ns")
    [[ -n $want && $(ns_inode "/proc/$pid/ns/net") == "$want" ]]
}

# true while PID exists and is not a zombie (a killed orphan can stay a zombie until reaped)
is_alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# wait up to $1 seconds (0.2 s steps) until none of PIDS... is alive
wait_gone() {
    local steps=$(($1 * 5)) pid alive
    shift
    while :; do
        alive=0
        for pid; do is_alive "$pid" && alive=1; done
        ((alive)) || return 0
        ((steps-- > 0)) || return 1
        sleep 0.2
    done
}

# SIGTERM to all of PIDS..., one bounded wait of GRACE seconds for all, then SIGKILL what is left
stop_pids() {
    local grace=$1 what=$2 pid
    shift 2
    (($# > 0)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    wait_gone "$grace" "$@" && return 0
    for pid; do
        if is_alive "$pid"; then
            log "$what: pid $pid ignored SIGTERM for ${grace}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait_gone 5 "$@" || log "warning: $what: still alive after SIGKILL: $*"
}

# Run CMD... in namespace NS with hostname NAME and the cluster's hosts file on /etc/hosts.
# The UTS and mount namespaces are new (private) ones, so nothing leaks into the root namespaces.
ns_run() {
    local ns=$1 name=$2
    shift 2
    # shellcheck disable=SC2016  # expanded by the inner sh, on purpose
    SLURM_CONF=$CONF nsenter --net="/run/netns/$ns" \
        unshare --uts --mount --propagation private -- \
        sh -c 'mount --bind "$1" /etc/hosts && hostname "$2" && shift 2 && exec "$@"' \
        cluster-ns "$HOSTS" "$name" "$@"
}

ctl_run() { ns_run "$CTL_NS" ctl "$@"; }

# --- install and munge -------------------------------------------------------------------------

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd sinfo srun sbatch munged munge unmunge; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    log "installing slurm-wlm and munge"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    munge_ok && return 0
    [[ -s /etc/munge/munge.key ]] || {
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
    }
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG_DIR/munged.start.log" 2>&1 9>&-
    local steps=50
    until munge_ok; do
        ((steps-- > 0)) || die "munged did not come up in 10 s (see /var/log/munge/munged.log)"
        sleep 0.2
    done
    : >"$MUNGE_MARK"
}

stop_munge() {
    [[ -e $MUNGE_MARK ]] || return 0
    local pid
    pid=$(read_pid /run/munge/munged.pid)
    if [[ -n $pid && $(readlink "/proc/$pid/exe" 2>/dev/null) == */munged ]]; then
        log "stopping munged (pid $pid)"
        stop_pids 10 munged "$pid"
    fi
    rm -f "$MUNGE_MARK"
}

# --- network -----------------------------------------------------------------------------------

make_network() {
    local node
    ip netns add "$CTL_NS"
    ip -n "$CTL_NS" link set lo up
    ip -n "$CTL_NS" link add br0 type bridge
    ip -n "$CTL_NS" addr add "$CTL_ADDR/24" dev br0
    ip -n "$CTL_NS" link set br0 up
    for node in "${NODES[@]}"; do
        ip netns add "$node"
        ip -n "$node" link set lo up
        # both ends are created directly inside the namespaces: nothing appears in the root one
        ip -n "$CTL_NS" link add "v$node" type veth peer name eth0 netns "$node"
        ip -n "$CTL_NS" link set "v$node" master br0
        ip -n "$CTL_NS" link set "v$node" up
        ip -n "$node" addr add "${NODE_ADDR[$node]}/24" dev eth0
        ip -n "$node" link set eth0 up
    done
}

# --- config ------------------------------------------------------------------------------------

sed_escape() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

render() {
    sed -e "s|@DIR@|$(sed_escape "$CLUSTER_DIR")|g" \
        -e "s|@CTL_ADDR@|$CTL_ADDR|g" \
        -e "s|@NODE1_ADDR@|${NODE_ADDR[node1]}|g" \
        -e "s|@NODE2_ADDR@|${NODE_ADDR[node2]}|g" \
        -e "s|@NODE_HW@|$(sed_escape "${NODE_HW:-}")|g" \
        "$1"
}

# CPUs and topology exactly as `slurmd -C` reports them; RealMemory 10 % under the machine's.
node_hardware() {
    local line field out=() mem=""
    line=$(slurmd -C | head -n 1)
    for field in $line; do
        case $field in
            CPUs=* | Boards=* | SocketsPerBoard=* | CoresPerSocket=* | ThreadsPerCore=*) out+=("$field") ;;
            RealMemory=*) mem=${field#RealMemory=} ;;
        esac
    done
    [[ ${#out[@]} -gt 0 ]] || die "could not parse \`slurmd -C\`: $line"
    [[ -n $mem ]] && out+=("RealMemory=$((mem * 9 / 10))")
    printf '%s\n' "${out[*]}"
}

write_config() {
    install -d -m 0755 "$CLUSTER_DIR" "$RUN_DIR" "$LOG_DIR"
    rm -rf "$CLUSTER_DIR/state" "$CLUSTER_DIR/spool"
    rm -f "$LOG_DIR"/slurm*.log
    # slurmd wants its spool folder (SlurmdSpoolDir=.../spool/%n) to exist before it starts
    install -d -m 0755 "$CLUSTER_DIR/state" "$CLUSTER_DIR/spool" "${NODES[@]/#/$CLUSTER_DIR/spool/}"
    NODE_HW=$(node_hardware)
    render "$TEMPLATES/slurm.conf.in" >"$CONF"
    render "$TEMPLATES/hosts.in" >"$HOSTS"
    render "$TEMPLATES/gres.conf.in" >"$CLUSTER_DIR/gres.conf"
    # placeholder "device" files for gres.conf's File= (see the comment in gres.conf.in)
    install -d -m 0755 "$CLUSTER_DIR/dev"
    rm -f "$CLUSTER_DIR/dev/gpu0" "$CLUSTER_DIR/dev/gpu1"
    mknod -m 0666 "$CLUSTER_DIR/dev/gpu0" c 1 3
    mknod -m 0666 "$CLUSTER_DIR/dev/gpu1" c 1 3
}

# --- daemons -----------------------------------------------------------------------------------

ctl_pidfile() { printf '%s\n' "$RUN_DIR/slurmctld.pid"; }
node_pidfile() { printf '%s\n' "$RUN_DIR/slurmd-$1.pid"; }

# wait up to 15 s for a daemon's pid file to name a live process in its namespace
wait_started() {
    local pidfile=$1 ns=$2 what=$3 logfile=$4 steps=75
    until alive_in_ns "$(read_pid "$pidfile")" "$ns"; do
        if ((steps-- <= 0)); then
            log "$what did not start; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.2
    done
}

# (called in an `if`, where set -e does not apply: every step returns on failure itself)
start_daemons() {
    local node
    rm -f "$RUN_DIR"/slurm*.pid
    log "starting slurmctld"
    ctl_run slurmctld </dev/null >>"$LOG_DIR/slurmctld.start.log" 2>&1 9>&- || return 1
    wait_started "$(ctl_pidfile)" "$CTL_NS" slurmctld "$LOG_DIR/slurmctld.log" || return 1
    for node in "${NODES[@]}"; do
        log "starting slurmd on $node"
        ns_run "$node" "$node" slurmd -N "$node" </dev/null >>"$LOG_DIR/slurmd-$node.start.log" 2>&1 9>&- ||
            return 1
    done
    for node in "${NODES[@]}"; do
        wait_started "$(node_pidfile "$node")" "$node" "slurmd on $node" "$LOG_DIR/slurmd-$node.log" ||
            return 1
    done
}

healthy() {
    local node
    ns_exists "$CTL_NS" || return 1
    alive_in_ns "$(read_pid "$(ctl_pidfile)")" "$CTL_NS" || return 1
    for node in "${NODES[@]}"; do
        ns_exists "$node" || return 1
        alive_in_ns "$(read_pid "$(node_pidfile "$node")")" "$node" || return 1
    done
    munge_ok
}

# number of nodes whose compact state matches the extended regex $1 ("idle" excludes idle*, idle~, ...)
count_nodes() {
    ctl_run timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null |
        awk -v re="^($1)\$" '$2 ~ re { n[$1] = 1 } END { print length(n) }'
}

# bounded poll until all nodes are in a state matching $1
wait_nodes() {
    local states=$1 want=${#NODES[@]} deadline=$((SECONDS + UP_TIMEOUT)) got=0
    while ((SECONDS < deadline)); do
        got=$(count_nodes "$states" || echo 0)
        [[ $got == "$want" ]] && return 0
        healthy || break
        sleep 0.5
    done
    log "nodes not ready after ${UP_TIMEOUT}s (in state $states: ${got:-0} of $want)"
    ctl_run timeout 10 sinfo -N -l >&2 || true
    tail -n 20 "$LOG_DIR/slurmctld.log" >&2 2>/dev/null || true
    return 1
}

# --- commands ----------------------------------------------------------------------------------

cmd_up() {
    local t0=$SECONDS
    install -d -m 0755 "$CLUSTER_DIR" "$RUN_DIR" "$LOG_DIR"
    exec 9>"$RUN_DIR/lock"
    flock -w 120 9 || die "another up/down holds $RUN_DIR/lock"
    install_packages
    start_munge
    # Already running: fine as long as every node answers (jobs may be running on it).
    if healthy && UP_TIMEOUT=10 wait_nodes 'idle|mix|alloc|comp' 2>/dev/null; then
        log "already running"
    else
        teardown
        write_config
        make_network
        if ! start_daemons || ! wait_nodes idle; then
            teardown
            die "cluster did not come up; stopped it again (logs in $LOG_DIR)"
        fi
    fi
    log "up in $((SECONDS - t0)) s; SLURM_CONF=$CONF"
    ctl_run timeout 10 sinfo -N -o '%N %P %t %c %m %G'
}

# stop daemons (pid files), then anything left in the namespaces (slurmstepd, job tasks, clients),
# then delete the namespaces; quiet and harmless when nothing runs
teardown() {
    local node ns pid pids=() left=()
    # the daemons, by their pid files (each checked to live in its namespace: no reused PIDs)
    pid=$(read_pid "$(ctl_pidfile)")
    alive_in_ns "$pid" "$CTL_NS" && pids+=("$pid")
    for node in "${NODES[@]}"; do
        pid=$(read_pid "$(node_pidfile "$node")")
        alive_in_ns "$pid" "$node" && pids+=("$pid")
    done
    if ((${#pids[@]})); then
        log "stopping slurmctld and slurmd (pids ${pids[*]})"
        stop_pids 15 "slurm daemons" "${pids[@]}"
    fi
    # Whatever still lives in our namespaces (slurmstepd, job tasks, clients) is found by its
    # network namespace (`ip netns pids`), not by name: SIGTERM, bounded wait, SIGKILL.
    for ns in "${NODES[@]}" "$CTL_NS"; do
        ns_exists "$ns" || continue
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null | grep -vx "$$" || true)
        ((${#pids[@]})) && left+=("${pids[@]}")
    done
    if ((${#left[@]})); then
        log "terminating what is left in the namespaces (slurmstepd, job tasks, clients): ${left[*]}"
        stop_pids 5 "leftover" "${left[@]}"
    fi
    for ns in "${NODES[@]}" "$CTL_NS"; do
        if ns_exists "$ns"; then
            ip netns delete "$ns" || log "warning: could not delete namespace $ns"
        fi
    done
    rm -f "$RUN_DIR"/slurm*.pid
}

cmd_down() {
    install -d -m 0755 "$RUN_DIR"
    exec 9>"$RUN_DIR/lock"
    flock -w 120 9 || die "another up/down holds $RUN_DIR/lock"
    teardown
    stop_munge
    log "down"
}

cmd_status() {
    if ! ns_exists "$CTL_NS" || ! alive_in_ns "$(read_pid "$(ctl_pidfile)")" "$CTL_NS"; then
        log "down (no slurmctld in namespace $CTL_NS)"
        return 3
    fi
    ctl_run timeout 20 sinfo -N -o '%N %P %t %c %m %G'
}

cmd_exec() {
    (($# > 0)) || die "usage: $0 exec CMD [ARGS...]"
    ns_exists "$CTL_NS" && [[ -r $CONF ]] || die "cluster is not up (run: $0 up)"
    ctl_run "$@"
}

main() {
    local cmd=${1:-}
    (($# > 0)) && shift
    check_cluster_dir
    case $cmd in
        up) need_root; cmd_up ;;
        down) need_root; cmd_down ;;
        status) need_root; cmd_status ;;
        exec) need_root; cmd_exec "$@" ;;
        *)
            printf 'usage: %s up|down|status|exec CMD...\n' "$0" >&2
            exit 2
            ;;
    esac
}

main "$@"
