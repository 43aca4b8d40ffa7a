#!/usr/bin/env bash
# Smoke test of the running test cluster (bring it up first: tests/cluster/up).
# Checks: both nodes idle; a 2-node x 2-task GPU job runs its 4 tasks across node1
# and node2 and sacct says COMPLETED; scancel; scontrol requeue of a running job; a
# submitit job from the project's venv returns [0, 1, 2, 3]; srun --mpi=pmix; with
# cgroups, a job over its --mem ends OUT_OF_MEMORY; a killed slurmd is seen as not
# responding, and `up` brings it back. Exits non-zero on the first failure.
# Usage: tests/cluster/smoke.sh   (about 1.5-2 minutes, most of it the node failure)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
[[ -r $STATE/env.sh ]] || die "no $STATE/env.sh: run tests/cluster/up first"
# shellcheck disable=SC1091
source "$STATE/env.sh"

PYTHON=${SCALING_STUDY_PYTHON:-$(cd "$HERE/../.." && pwd)/.venv/bin/python}
WORK=$STATE/smoke
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

ok() { printf '[smoke] ok: %s\n' "$*"; }
fail() {
    printf '[smoke] FAIL: %s\n' "$*" >&2
    printf '[smoke] logs: %s\n' "$LOG" >&2
    exit 1
}

# wait_until TIMEOUT DESCRIPTION COMMAND...: poll COMMAND every second.
wait_until() {
    local timeout=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@"; do
        ((SECONDS - t0 < timeout)) || fail "$what: not within ${timeout}s"
        sleep 1
    done
}

job_state() { squeue -h -j "$1" -o '%T' 2>/dev/null || true; }
is_running() { [[ $(job_state "$1") == RUNNING ]]; }
# sacct_states ID: the distinct states of the job and all its steps
sacct_states() { sacct -j "$1" -n -P -o State 2>/dev/null | sort -u | tr '\n' ' ' | sed 's/ $//'; }
sacct_is() { [[ $(sacct_states "$1") == "$2" ]]; }
sacct_alloc_is() { [[ $(sacct -j "$1" -n -X -P -o State 2>/dev/null | tail -n1) == "$2"* ]]; }

# --- 1. the nodes ----------------------------------------------------------------
states=$(sinfo -h -N -o '%N=%T' | sort -u | tr '\n' ' ')
[[ $states == "node1=idle node2=idle " ]] || fail "expected node1 and node2 idle, sinfo says: $states"
ok "sinfo: $states"

# --- 2. a 2-node GPU job: 4 tasks, 2 per node, 2 GPUs each ----------------------
# shellcheck disable=SC2016
job=$(sbatch --parsable --nodes=2 --ntasks-per-node=2 --gpus-per-node=2 -o "$WORK/gpu.%j.out" \
    --wrap 'srun bash -c "echo \$SLURMD_NODENAME \$SLURM_PROCID \$CUDA_VISIBLE_DEVICES"')
wait_until 60 "GPU job $job COMPLETED in sacct" sacct_is "$job" COMPLETED
out=$(sort -k2n "$WORK/gpu.$job.out")
expected=$'node1 0 0,1\nnode1 1 0,1\nnode2 2 0,1\nnode2 3 0,1'
[[ $out == "$expected" ]] || fail "GPU job $job printed:"$'\n'"$out"$'\n'"expected:"$'\n'"$expected"
ok "GPU job $job: 4 tasks on node1+node2, CUDA_VISIBLE_DEVICES=0,1 each; sacct: $(sacct_states "$job")"

# --- 3. scancel ----------------------------------------------------------------
job=$(sbatch --parsable --nodes=1 -o /dev/null --wrap 'sleep 300')
wait_until 30 "job $job running" is_running "$job"
scancel "$job"
wait_until 30 "job $job CANCELLED in sacct" sacct_alloc_is "$job" CANCELLED
ok "scancel $job: sacct says $(sacct -j "$job" -n -X -P -o State)"

# --- 4. scontrol requeue of a running job ---------------------------------------
# shellcheck disable=SC2016
job=$(sbatch --parsable --nodes=2 --requeue -o "$WORK/requeue.%j.out" \
    --wrap 'echo start $SLURM_RESTART_COUNT; srun sleep 300')
wait_until 30 "job $job running" is_running "$job"
scontrol requeue "$job"
restarts() { scontrol show job "$1" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2; }
[[ $(restarts "$job") == 1 ]] || fail "job $job: Restarts=$(restarts "$job") after scontrol requeue"
wait_until 20 "job $job REQUEUED in sacct" bash -c "sacct -j $job -n -X -P -o State -D | grep -q REQUEUED"
# A requeued job may start again after cred_expire (30 s here, see slurm.conf).
wait_until 90 "requeued job $job running again" is_running "$job"
wait_until 20 "requeued job $job restarted its script" grep -q 'start 1' "$WORK/requeue.$job.out"
scancel "$job"
wait_until 30 "job $job CANCELLED in sacct" sacct_alloc_is "$job" CANCELLED
ok "scontrol requeue $job: REQUEUED, ran again with SLURM_RESTART_COUNT=1, cancelled"

# --- 5. submitit from the project's venv ----------------------------------------
[[ -x $PYTHON ]] || fail "no python at $PYTHON (set SCALING_STUDY_PYTHON)"
result=$(timeout 180 "$PYTHON" -c "
import submitit
ex = submitit.AutoExecutor(folder='$WORK/submitit', cluster='slurm')
ex.update_parameters(nodes=2, tasks_per_node=2, timeout_min=5, slurm_partition='debug')
j = ex.submit(lambda: __import__('submitit').JobEnvironment().global_rank)
print(j.results())
") || fail "submitit job failed (see $WORK/submitit/)"
[[ $result == "[0, 1, 2, 3]" ]] || fail "submitit job returned $result, expected [0, 1, 2, 3]"
ok "submitit job (2 nodes x 2 tasks) returned $result"

# --- 6. PMIx: srun --mpi=pmix starts 4 ranks across both nodes -------------------
# shellcheck disable=SC2016
timeout 60 srun --quiet --mpi=pmix --nodes=2 --ntasks-per-node=2 --output="$WORK/pmix.out" \
    bash -c 'echo $SLURMD_NODENAME $PMIX_RANK' || fail "srun --mpi=pmix failed (see $LOG/slurmd.node1.log)"
ranks=$(sort -k2n "$WORK/pmix.out")
[[ $ranks == $'node1 0\nnode1 1\nnode2 2\nnode2 3' ]] || fail "srun --mpi=pmix ranks:"$'\n'"$ranks"
ok "srun --mpi=pmix: PMIX_RANK 0-3 on node1+node2"

# --- 7. with cgroups, memory is enforced -----------------------------------------
if grep -q '^CgroupPlugin=cgroup/v1' "$ETC/cgroup.conf"; then
    job=$(sbatch --parsable --nodes=1 --mem=200M -o /dev/null \
        --wrap "srun $PYTHON -c 'b = bytearray(600 * 2**20)'")
    oom_step() { sacct -j "$1" -n -P -o JobID,State 2>/dev/null | grep -q '\.0|OUT_OF_MEMORY'; }
    wait_until 60 "step $job.0 over its job's --mem ends OUT_OF_MEMORY" oom_step "$job"
    ok "cgroups: step $job.0 allocating 600 MB with --mem=200M: OUT_OF_MEMORY"
else
    ok "cgroups not in use: memory not enforced (skipped)"
fi

# --- 8. a slurmd dies: the node is noticed, `up` brings it back ------------------
both_idle() { [[ $(sinfo -h -N -o '%N=%T' | sort -u | tr '\n' ' ') == "node1=idle node2=idle " ]]; }
# Kill it on an idle node: a slurmd killed while a job completes leaves the job
# COMPLETING until slurmctld resends the terminate request (up to a minute later).
wait_until 60 "both nodes idle before killing a slurmd" both_idle
node=node2
pid=$(recorded_pid "slurmd-$node" slurmd) || fail "no running slurmd for $node recorded by up"
kill -KILL "$pid"
t0=$SECONDS
not_responding() { [[ $(sinfo -h -N -n "$node" -o '%T') =~ (\*|down|fail) ]]; }
wait_until 120 "$node seen as not responding after its slurmd was killed" not_responding
ok "slurmd $node killed: sinfo says $(sinfo -h -N -n "$node" -o '%T') after $((SECONDS - t0))s"
sleep 20  # let slurmctld also mark it DOWN (SlurmdTimeout=30), as a real failure would
"$HERE/up" >"$WORK/up-again.log" 2>&1 || { cat "$WORK/up-again.log" >&2; fail "up did not bring $node back"; }
wait_until 90 "both nodes idle after up" both_idle
ok "up again: $(sinfo -h -N -o '%N=%T' | tr '\n' ' ')($((SECONDS - t0))s after the kill)"

echo "[smoke] all checks passed"
