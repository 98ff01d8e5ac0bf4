#!/bin/sh
# Installs (if needed) and starts a single-node Slurm cluster on this Debian
# machine, as root and without systemd, for nightshift's Slurm executor tests
# and benchmark. Stop it with scripts/slurm_down.sh.
#
#   sudo scripts/slurm_up.sh            # prints the seconds it took at the end
#
# Everything Slurm writes lives under $NS_SLURM_STATE (default
# /var/lib/nightshift-slurm); its logs are in $NS_SLURM_STATE/log.
set -eu

STATE=${NS_SLURM_STATE:-/var/lib/nightshift-slurm}
CPUS=${NS_SLURM_CPUS:-16}            # more than the cores: several agents at once
started=$(date +%s.%N)

if [ "$(id -u)" -ne 0 ]; then
    echo "slurm_up.sh: run as root (it installs packages and starts daemons)" >&2
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurmctld slurmd slurm-client munge from Debian's archive"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
fi

if sinfo -h -o %t >/dev/null 2>&1; then
    echo "a Slurm controller already answers: nothing to start"
    sinfo
    exit 0
fi

mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log" "$STATE/run" /etc/slurm

# munge: a key, its run folder, and munged as the munge user.
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 2>/dev/null
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
fi

host=$(hostname -s)
# Memory the node offers: all of it but 1 GiB, in MiB.
total_mib=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
real_mib=$((total_mib - 1024))

# Process tracking and limits through cgroups where the host has cgroup v1
# controllers mounted (Slurm 22.05 needs them for --mem enforcement and to kill
# whole trees); elsewhere /proc-based tracking.
if [ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/freezer ]; then
    proctrack=proctrack/cgroup
    task=task/cgroup,task/affinity
    cat >/etc/slurm/cgroup.conf <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
EOF
else
    proctrack=proctrack/linuxproc
    task=task/none
    rm -f /etc/slurm/cgroup.conf
fi

cat >/etc/slurm/slurm.conf <<EOF
# Written by nightshift's scripts/slurm_up.sh: one node, for tests.
ClusterName=nightshift
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=$proctrack
TaskPlugin=$task
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
# No accounting database: sacct -c reads the job-completion log.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
JobAcctGatherType=jobacct_gather/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$real_mib State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

/usr/sbin/slurmctld
/usr/sbin/slurmd

# Ready when the node shows idle.
i=0
while :; do
    state=$(sinfo -h -o %t 2>/dev/null | head -n 1 || true)
    case $state in
        idle*) break ;;
        down*|drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    i=$((i + 1))
    if [ $i -gt 600 ]; then
        echo "slurm_up.sh: the node did not become idle in 60 s (state: ${state:-none})" >&2
        echo "logs: $STATE/log" >&2
        tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
        exit 1
    fi
    sleep 0.1
done

ended=$(date +%s.%N)
sinfo
echo "single-node Slurm up in $(awk "BEGIN {printf \"%.1f\", $ended - $started}") s ($proctrack, $CPUS CPUs)"
