#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on this machine for tests/test_slurm.py (CI; Debian/Ubuntu).
#
#   .ci/slurm-up.sh      install (apt) munge + slurmctld + slurmd + slurm-client if missing, write a one-node
#                        slurm.conf for this host (no accounting database), start munged, slurmctld and slurmd,
#                        and wait until the node is idle
#   .ci/slurm-down.sh    stop exactly the daemons this script started
#
# Needs root (or sudo). State, logs and the PIDs of the started daemons live in $SSNET_SLURM_DIR
# (default /tmp/ssnet-slurm). /etc/slurm/slurm.conf is written only if absent or written by this script
# before: an existing site configuration is never touched (the script stops instead).
set -euo pipefail

DIR=${SSNET_SLURM_DIR:-/tmp/ssnet-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by ssnet .ci/slurm-up.sh"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "slurm-up: needs root or sudo" >&2; exit 1; }
    SUDO="sudo"
fi
say() { echo "slurm-up: $*" >&2; }
started=$(date +%s)

# ---- packages ----------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null ||
    ! command -v munged >/dev/null; then
    say "installing munge slurmctld slurmd slurm-client (apt)"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        munge slurmctld slurmd slurm-client >/dev/null
fi

# ---- configuration -----------------------------------------------------------------------------------
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    say "$CONF exists and was not written by this script; refusing to replace a site configuration"
    exit 1
fi
$SUDO mkdir -p "$DIR"/{state,spool,log} /etc/slurm
host=$(hostname -s)
# The node line as slurmd detects it (CPUs, sockets, cores, threads), memory kept 10% below the detected value.
node=$(slurmd -C | head -1 | sed -E 's/RealMemory=([0-9]+)//')
memory=$(slurmd -C | head -1 | sed -nE 's/.*RealMemory=([0-9]+).*/\1/p')
memory=$((memory * 9 / 10))
$SUDO tee "$CONF" >/dev/null <<EOF
$MARK (one node, no accounting database; stop with .ci/slurm-down.sh)
ClusterName=ssnetci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# squeue must still list finished jobs when the executor polls it (--slurm-status-command squeue)
MinJobAge=300
KillWait=30
SchedulerParameters=batch_sched_delay=1,sched_min_interval=100000
$node NodeAddr=127.0.0.1 RealMemory=$memory State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

# ---- daemons -----------------------------------------------------------------------------------------
if ! pgrep -x munged >/dev/null; then
    [ -f /etc/munge/munge.key ] || $SUDO mungekey --create
    $SUDO mkdir -p /run/munge && $SUDO chown munge:munge /run/munge && $SUDO chmod 0755 /run/munge
    $SUDO runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    $SUDO cp /run/munge/munged.pid "$DIR/munged.pid" # ours: slurm-down.sh stops it
fi
munge -n | unmunge >/dev/null || { say "munge does not work"; exit 1; }
for daemon in slurmctld slurmd; do
    if [ -f "$DIR/$daemon.pid" ] && kill -0 "$(cat "$DIR/$daemon.pid")" 2>/dev/null; then
        say "$daemon already running (pid $(cat "$DIR/$daemon.pid"))"
    else
        $SUDO /usr/sbin/$daemon
    fi
done

# ---- wait for an idle node ---------------------------------------------------------------------------
for _ in $(seq 1 90); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
    case "$state" in
    idle) break ;;
    down* | drain*) $SUDO scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
if [ "$state" != idle ]; then
    say "node did not become idle (state '$state'); logs in $DIR/log"
    tail -20 "$DIR"/log/*.log >&2 || true
    exit 1
fi
say "one-node cluster up in $(($(date +%s) - started)) s: partition ci, node $host idle ($CONF, state in $DIR)"
sinfo >&2
