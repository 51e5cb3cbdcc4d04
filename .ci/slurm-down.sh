#!/usr/bin/env bash
# Stop the daemons that .ci/slurm-up.sh started (by the PIDs it recorded in $SSNET_SLURM_DIR), nothing else.
set -uo pipefail

DIR=${SSNET_SLURM_DIR:-/tmp/ssnet-slurm}
SUDO=""
[ "$(id -u)" != 0 ] && SUDO="sudo"
say() { echo "slurm-down: $*" >&2; }

[ -d "$DIR" ] || { say "nothing to stop ($DIR absent)"; exit 0; }
# jobs still queued or running on the test cluster (the cluster is this script's own)
command -v scancel >/dev/null && $SUDO scancel --user="$(id -un)" 2>/dev/null
for daemon in slurmd slurmctld munged; do
    pidfile="$DIR/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        $SUDO kill -TERM "$pid"
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$pid" 2>/dev/null && $SUDO kill -KILL "$pid"
        say "stopped $daemon (pid $pid)"
    fi
    $SUDO rm -f "$pidfile"
done
