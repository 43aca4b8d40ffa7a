# shellcheck shell=bash disable=SC2034
# Shared by up, down and smoke.sh: where the test cluster lives and how to tell its
# processes from anyone else's. Sourced, not run.

STATE=${SCALING_STUDY_CLUSTER_DIR:-/tmp/scaling-study-cluster}
STATE=$(realpath -m -- "$STATE")
CLUSTER_NAME=scaling

# Loopback ports, all away from the Slurm/MariaDB defaults (6817-6819, 3306) so a
# real installation on the same host is never touched. A second cluster beside this
# one needs its own state directory and SCALING_STUDY_CLUSTER_PORT_OFFSET (e.g. 100).
PORT_OFFSET=${SCALING_STUDY_CLUSTER_PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]+$ ]] || { echo "SCALING_STUDY_CLUSTER_PORT_OFFSET must be a number" >&2; exit 1; }
MARIADB_PORT=$((16306 + PORT_OFFSET))
SLURMCTLD_PORT=$((16817 + PORT_OFFSET))
SLURMDBD_PORT=$((16819 + PORT_OFFSET))
SLURMD_PORTS=($((17001 + PORT_OFFSET)) $((17002 + PORT_OFFSET)))
NODES=(node1 node2)

ETC=$STATE/etc
LOG=$STATE/log
RUN=$STATE/run          # pid files the daemons write themselves
PIDS=$STATE/pids        # pid files of exactly the processes `up` started
SLURM_CONF_FILE=$ETC/slurm.conf
MUNGE_DIR=$STATE/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
MARIADB_DIR=$STATE/mariadb
MARIADB_SOCKET=$MARIADB_DIR/mysqld.sock
MARKER=$STATE/.scaling-study-cluster

# Every daemon `up` starts carries this variable in its initial environment; `down`
# stops a recorded PID only if it still does (so a recycled PID, or somebody else's
# slurmd/munged/mariadbd, is never signalled).
OWNER_VAR=SCALING_STUDY_CLUSTER

say() { printf '[cluster] %s\n' "$*"; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# pid_is_ours PID PROGRAM: alive, runs PROGRAM, and was started by `up` for this
# state directory.
pid_is_ours() {
    local pid=$1 program=$2 comm
    pid_alive "$pid" || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "${program:0:15}" ]] || return 1
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "$OWNER_VAR=$STATE"
}

# recorded_pid NAME: the PID `up` recorded for NAME, if that process is still ours.
# Prints nothing (and fails) otherwise.
recorded_pid() {
    local name=$1 program=$2 pid
    [[ -r $PIDS/$name.pid ]] || return 1
    pid=$(<"$PIDS/$name.pid")
    pid_is_ours "$pid" "$program" || return 1
    printf '%s\n' "$pid"
}

# Name of each process `up` starts -> the program it runs, in start order.
COMPONENTS=(munged mariadb slurmdbd slurmctld slurmd-node1 slurmd-node2)
program_of() {
    case $1 in
        munged) echo munged ;;
        mariadb) echo mariadbd ;;
        slurmdbd) echo slurmdbd ;;
        slurmctld) echo slurmctld ;;
        slurmd-*) echo slurmd ;;
        *) return 1 ;;
    esac
}

# stepd_is_ours PID: a slurmstepd of this cluster. slurmstepd rewrites its command
# line over its environment, so it is told by the slurmd log under $LOG it keeps open.
stepd_is_ours() {
    local pid=$1 fd
    pid_alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmstepd ]] || return 1
    for fd in /proc/"$pid"/fd/*; do
        [[ $(readlink "$fd" 2>/dev/null) == "$LOG"/* ]] && return 0
    done
    return 1
}

# descendants PID...: print these PIDs and those of all their descendants.
descendants() {
    ps -e -o pid=,ppid= | awk -v roots="$*" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            for (changed = 1; changed;) {
                changed = 0
                for (i in pids) {
                    p = pids[i]
                    if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 }
                }
            }
            for (p in keep) print p
        }'
}
