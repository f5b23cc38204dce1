#!/usr/bin/env bash
# A one-node SLURM on this machine, to try the cluster scripts before a real cluster (and for the
# `slurm` test). Debian/Ubuntu: apt-get install slurmd slurmctld slurm-client munge; run as root.
#   bash local_cluster.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   GPUS=4 bash local_cluster.sh start DIR   # the node also offers 4 GPUs (a count, for the scripts'
#                                            # --gpus lines; the jobs then run with train.accelerator=cpu)
#   export SLURM_CONF=DIR/slurm.conf  # then sbatch, srun, squeue, sacct use it
#   bash local_cluster.sh stop DIR
# The node is this host with all its cores and 90 % of its memory; no accounting, no cgroups
# (proctrack/linuxproc, task/none); how each job ended (state, exit code) goes to DIR/jobs.txt.
set -euo pipefail
cmd=${1:?usage: local_cluster.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: local_cluster.sh start|stop DIR}" && cd "$2" && pwd)
host=$(hostname -s)

stop() {  # SIGTERM to the daemons this DIR started, then wait (up to 20 s) until they are gone
  local pids=() pid
  for d in slurmd slurmctld munged; do
    [[ -f "$dir/$d.pid" ]] && pids+=("$(cat "$dir/$d.pid")")
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 40); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 0.5
  done
  rm -f "$dir"/*.pid
}

case "$cmd" in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: local_cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found; apt-get install slurmd slurmctld slurm-client munge" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "error: local_cluster.sh starts slurmd and munged as root" >&2; exit 1; }
stop
rm -rf "$dir/state" "$dir/spool"  # a fresh cluster: no jobs or node states of an earlier one
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
rm -f "$dir"/*.log
gpus=${GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c ^GPU || true)}
gpus=${gpus:-0}
: > "$dir/gres.conf"
for ((i = 0; i < gpus; i++)); do  # SLURM schedules a GPU by its device file: stand-ins where there is none
  dev=/dev/nvidia$i
  [[ -e $dev ]] || { dev=$dir/gpu$i; touch "$dev"; }
  echo "NodeName=$host Name=gpu File=$dev" >> "$dir/gres.conf"
done
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10 / 1024 ))
cat > "$dir/slurm.conf" <<CONF
ClusterName=asrkd-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobs.txt
MinJobAge=3600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
GresTypes=gpu
NodeName=$host CPUs=$(nproc) RealMemory=$mem_mb Gres=gpu:$gpus State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
munge_key=/etc/munge/munge.key
[[ -f $munge_key ]] || { mungekey --create --keyfile "$munge_key" 2>/dev/null || create-munge-key -f; }
mkdir -p /run/munge  # the socket SLURM looks for: /run/munge/munge.socket.2
munged --force --pid-file "$dir/munged.pid" --log-file "$dir/munged.log" --seed-file "$dir/munge/seed" \
  --key-file "$munge_key"
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
    echo "SLURM is up: export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
echo "error: the node did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
exit 1
