#!/usr/bin/env bash
# Start a throw-away one-node SLURM cluster on this machine, for the `slurm` tests.
#
#   tests/slurm/start_cluster.sh [STATE_DIR]      (must run as root)
#
# - Installs Debian's `slurmctld slurmd slurm-client munge` when a binary is missing.
# - Writes every config, log and PID file into STATE_DIR (default: a new `mktemp -d`);
#   outside it only munge's key and socket (a `mktemp -d` under /tmp the munge user can
#   reach, named in STATE_DIR/munge_dir) and the link /run/slurm/conf -> STATE_DIR
#   (see step 4), both removed again by stop_cluster.sh.
# - One node `localhost` (CPUs and memory of this machine), partition `debug` (default),
#   a `gpu` GRES of CELLGNN_SLURM_GPUS devices (default 1) so `sbatch --gpus=1` is
#   schedulable: the devices are the real /dev/nvidia* when present, else dummy files.
# - No accounting (no slurmdbd): query jobs with `squeue`, not `sacct`.
# - Prints `export SLURM_CONF=...` as its only stdout line (also in STATE_DIR/env.sh);
#   stop everything with `tests/slurm/stop_cluster.sh STATE_DIR` (kills by recorded PID).
#   On failure it stops what it started and leaves STATE_DIR (with the logs) behind.
#
# Environment: CELLGNN_SLURM_PORT (slurmctld port, default 6817; slurmd uses +1),
# CELLGNN_SLURM_CPUS (node CPUs, default `nproc`), CELLGNN_SLURM_MEM_MB (node memory,
# default 90% of MemTotal), CELLGNN_SLURM_GPUS (GPU GRES count, default 1).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() { echo "start_cluster.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it starts slurmctld/slurmd/munged)"

# --- 1. packages ----------------------------------------------------------------------
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
need_install=0
for bin in munged slurmctld slurmd sbatch srun squeue sinfo scontrol scancel; do
    command -v "$bin" >/dev/null 2>&1 || need_install=1
done
if [[ $need_install -eq 1 ]]; then
    echo "start_cluster.sh: installing slurmctld slurmd slurm-client munge (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2
fi
id munge >/dev/null 2>&1 || die "user 'munge' missing (is the munge package installed?)"

# --- 2. state directory and sizes -----------------------------------------------------
DIR="${1:-$(mktemp -d /tmp/cellgnn-slurm.XXXXXX)}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
[[ -e "$DIR/slurm.conf" ]] && die "$DIR already holds a cluster; stop it first (stop_cluster.sh $DIR)"
chmod 755 "$DIR"
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"

PORT="${CELLGNN_SLURM_PORT:-6817}"
CPUS="${CELLGNN_SLURM_CPUS:-$(nproc)}"
MEM_TOTAL_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
MEM_MB="${CELLGNN_SLURM_MEM_MB:-$(( MEM_TOTAL_MB * 9 / 10 ))}"
NGPU="${CELLGNN_SLURM_GPUS:-1}"
# munged runs as the munge user, which may not reach STATE_DIR (e.g. under a 0700 dir)
MUNGE="$(mktemp -d /tmp/cellgnn-munge.XXXXXX)"
echo "$MUNGE" > "$DIR/munge_dir"
SOCKET="$MUNGE/munge.socket"
RUNCONF=/run/slurm/conf

for p in "$PORT" "$((PORT + 1))"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p is in use (another SLURM?); set CELLGNN_SLURM_PORT to a free port"
    fi
done
[[ -e /etc/slurm/slurm.conf ]] && die "/etc/slurm/slurm.conf exists: srun inside jobs would read it instead of this cluster's config"
if [[ -e $RUNCONF || -L $RUNCONF ]]; then
    other="$(readlink -f "$RUNCONF" || true)"
    if [[ -s "$other/slurmctld.pid" ]] && kill -0 "$(cat "$other/slurmctld.pid")" 2>/dev/null; then
        die "another test cluster is running ($RUNCONF -> $other); stop it first"
    fi
    [[ -L $RUNCONF ]] || die "$RUNCONF exists and is not a link made by this script"
    rm -f "$RUNCONF"   # stale link of a cluster that is gone
fi

# From here on, a failure stops whatever was started (logs stay in $DIR).
trap 'rc=$?; if [[ $rc -ne 0 ]]; then "$HERE/stop_cluster.sh" "$DIR" --keep || true; fi' EXIT

# --- 3. configs -----------------------------------------------------------------------
gpu_files=()
for ((i = 0; i < NGPU; i++)); do
    if [[ -e /dev/nvidia$i ]]; then
        gpu_files+=("/dev/nvidia$i")
    else
        : > "$DIR/gpu$i"          # dummy device: SLURM only needs a path to track
        gpu_files+=("$DIR/gpu$i")
    fi
done
if [[ $NGPU -gt 1 ]]; then gres_file="${gpu_files[0]%0}[0-$((NGPU - 1))]"; else gres_file="${gpu_files[0]}"; fi

cat > "$DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=localhost Name=gpu File=$gres_file
EOF

cat > "$DIR/slurm.conf" <<EOF
# one-node test cluster written by tests/slurm/start_cluster.sh
ClusterName=cellgnn
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# poll job memory every second and kill steps above their --mem: without cgroups this is
# how the node enforces memory, so that a too-small mem_mb fails and is retried
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# keep finished jobs visible to squeue for a day: without accounting (sacct) squeue is
# how the executor and the tests learn a job's final state
MinJobAge=86400
ReturnToService=2
SlurmdParameters=config_overrides
MailProg=/bin/true
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$NGPU State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
echo "export SLURM_CONF=$DIR/slurm.conf" > "$DIR/env.sh"

# --- 4. client config inside jobs -----------------------------------------------------
# The slurm-jobstep executor (what runs inside each job) strips every SLURM_* variable,
# SLURM_CONF included, before it calls `srun`. Without SLURM_CONF a SLURM client reads
# /etc/slurm/slurm.conf, else /run/slurm/conf/slurm.conf (where a "configless" slurmd
# keeps its copy), so that link makes this cluster's config the node's config.
mkdir -p "$(dirname "$RUNCONF")"
ln -s "$DIR" "$RUNCONF"

# --- 5. munge (own key and socket, runs as the munge user) ----------------------------
dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$MUNGE"
chmod 700 "$MUNGE"
chmod 400 "$MUNGE/munge.key"
runuser -u munge -- munged --force \
    --socket="$SOCKET" --key-file="$MUNGE/munge.key" \
    --pid-file="$MUNGE/munged.pid" --log-file="$MUNGE/munged.log" \
    --seed-file="$MUNGE/munged.seed"
for _ in $(seq 50); do [[ -S "$SOCKET" && -s "$MUNGE/munged.pid" ]] && break; sleep 0.1; done
[[ -S "$SOCKET" ]] || die "munged did not start; see $MUNGE/munged.log"
cp "$MUNGE/munged.pid" "$DIR/munged.pid"
chmod 755 "$MUNGE"   # the socket's directory must be searchable by SLURM clients

# --- 6. SLURM daemons -----------------------------------------------------------------
export SLURM_CONF="$DIR/slurm.conf"
slurmctld -f "$SLURM_CONF"
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
scontrol ping >/dev/null 2>&1 || die "slurmctld did not start; see $DIR/log/slurmctld.log"
slurmd -f "$SLURM_CONF" -N localhost
state=""
for _ in $(seq 150); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1)
    [[ "$state" == idle* ]] && break
    sleep 0.2
done
[[ "$state" == idle* ]] || die "node not idle (state '$state'); see $DIR/log/slurmd.log"

echo "start_cluster.sh: one-node SLURM up in $DIR: localhost, $CPUS CPUs, $MEM_MB MB, gpu:$NGPU, partition debug" >&2
echo "export SLURM_CONF=$SLURM_CONF"
