#!/bin/sh
# Stops the single-node Slurm cluster started by scripts/slurm_up.sh: slurmd,
# slurmctld and munged, each by the PID in its pid file (never by name).
set -u

STATE=${NS_SLURM_STATE:-/var/lib/nightshift-slurm}

stop() { # name pidfile
    [ -s "$2" ] || return 0
    pid=$(cat "$2")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
        fi
        echo "stopped $1 ($pid)"
    fi
    rm -f "$2"
}

stop slurmd "$STATE/run/slurmd.pid"
stop slurmctld "$STATE/run/slurmctld.pid"
stop munged /run/munge/munged.pid
