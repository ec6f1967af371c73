#!/usr/bin/env bash
# Stop a cluster started by tests/slurm/start_cluster.sh and delete its state directory.
#
#   tests/slurm/stop_cluster.sh STATE_DIR [--keep]
#
# Cancels the cluster's jobs, then stops slurmd, slurmctld and munged by the PIDs recorded
# in STATE_DIR (SIGTERM, then SIGKILL after 10 s), removes the /run/slurm/conf link if it
# points at STATE_DIR, and deletes STATE_DIR and munge's directory unless --keep is given.
set -uo pipefail

DIR="${1:?usage: stop_cluster.sh STATE_DIR [--keep]}"
KEEP="${2:-}"
[[ -d "$DIR" ]] || { echo "stop_cluster.sh: no directory $DIR" >&2; exit 1; }
DIR="$(cd "$DIR" && pwd)"
[[ -f "$DIR/slurm.conf" ]] || { echo "stop_cluster.sh: no cluster config in $DIR" >&2; exit 1; }
export SLURM_CONF="$DIR/slurm.conf" PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

alive() {  # alive NAME PIDFILE: print the PID if PIDFILE names a live process called NAME
    local pid
    [[ -s "$2" ]] || return 1
    pid=$(tr -dc '0-9' < "$2")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # the PID may have been reused by an unrelated process since
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1"* ]] || return 1
    echo "$pid"
}

# cancel jobs first, so that their slurmstepd processes end with them
if alive slurmctld "$DIR/slurmctld.pid" >/dev/null; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [[ -n "$jobs" ]]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 50); do
            [[ -z "$(squeue -h -t PD,R,CG -o %i 2>/dev/null)" ]] && break
            sleep 0.2
        done
    fi
fi

stop() {  # stop NAME PIDFILE
    local pid
    pid=$(alive "$1" "$2") || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    echo "stop_cluster.sh: $1 ($pid) ignored SIGTERM, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
}

stop slurmd "$DIR/slurmd.pid"
stop slurmctld "$DIR/slurmctld.pid"
stop munged "$DIR/munged.pid"

RUNCONF=/run/slurm/conf
if [[ -L $RUNCONF && "$(readlink "$RUNCONF")" == "$DIR" ]]; then
    rm -f "$RUNCONF"
fi
if [[ "$KEEP" != "--keep" ]]; then
    if [[ -s "$DIR/munge_dir" ]]; then
        munge_dir="$(cat "$DIR/munge_dir")"
        [[ "$munge_dir" == /tmp/cellgnn-munge.* ]] && rm -rf "$munge_dir"
    fi
    rm -rf "$DIR"
fi
