#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for CI (issue 4): Debian's slurm-wlm + munge, started without systemd.
#
# For a container where we are root and no init system runs: daemons are started directly, processes are
# tracked by /proc (no cgroups), and the node is "localhost" with 2 CPUs, so two single-CPU array tasks run at
# once. Safe to run twice: packages, key and config are kept, running daemons are left alone (or restarted
# when the config changed), and it only returns once `sinfo` shows the node idle.
#
# Usage: scripts/slurm-ci.sh            (env: SLURM_CI_CPUS=2, SLURM_CI_MEM_MB=20000, SLURM_CI_WAIT_S=90)
set -euo pipefail

CPUS="${SLURM_CI_CPUS:-2}"
MEM_MB="${SLURM_CI_MEM_MB:-20000}"
WAIT_S="${SLURM_CI_WAIT_S:-90}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm

log() { printf '[slurm-ci] %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root (installs packages and starts daemons)" >&2
  exit 1
fi

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sbatch >/dev/null; then
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  local pkgs=(slurm-wlm slurmctld slurmd slurm-client munge)
  # No daemons from the package scripts: there is no init system, we start them below.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  log "installing ${pkgs[*]}"
  if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
    log "install failed; running apt-get update and retrying"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  fi
  if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
}

write_munge_key() {
  install -d -m 0700 -o munge -g munge /etc/munge
  install -d -m 0755 -o munge -g munge /run/munge /var/lib/munge
  install -d -m 0700 -o munge -g munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
}

start_munged() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
    return
  fi
  log "starting munged"
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 20); do
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    sleep 0.5
  done
  log "munged did not come up" >&2
  exit 1
}

render_conf() {
  cat <<EOF
# Written by scripts/slurm-ci.sh: one node (localhost), no cgroups, no accounting database.
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2000
# Trust the CPUs / memory below instead of what slurmd detects (containers report odd topologies).
SlurmdParameters=config_overrides
ReturnToService=2
# Keep finished jobs visible to scontrol for 10 minutes (there is no sacct database here).
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

# Prints "changed" when the file was (re)written.
write_conf() {
  install -d -m 0755 "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
  local new
  new="$(render_conf)"
  if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$new" ]; then
    return
  fi
  printf '%s\n' "$new" >"$CONF"
  echo changed
}

running() {  # running NAME PIDFILE
  [ -s "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null
}

stop_daemon() {  # stop_daemon NAME PIDFILE
  if running "$1" "$2"; then
    log "stopping $1 (config changed)"
    kill "$(cat "$2")"
    for _ in $(seq 1 20); do running "$1" "$2" || break; sleep 0.5; done
  fi
}

start_daemons() {
  if ! running slurmctld /run/slurmctld.pid; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
  fi
  if ! running slurmd /run/slurmd.pid; then
    log "starting slurmd"
    /usr/sbin/slurmd -N localhost
  fi
}

wait_idle() {
  local state="" deadline=$((SECONDS + WAIT_S)) resumed=0
  while [ "$SECONDS" -lt "$deadline" ]; do
    state="$(sinfo -h -n localhost -o '%T' 2>/dev/null | head -n1 || true)"
    case "$state" in
      idle|mixed|allocated) log "node localhost is $state"; return 0 ;;
      drain*|down*|fail*)
        if [ "$resumed" = 0 ]; then
          log "node localhost is $state; resuming it"
          scontrol update nodename=localhost state=resume || true
          resumed=1
        fi ;;
    esac
    sleep 1
  done
  log "node localhost not idle after ${WAIT_S}s (state: ${state:-none})" >&2
  sinfo -R >&2 || true
  tail -n 30 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
  return 1
}

main() {
  install_packages
  write_munge_key
  start_munged
  if [ -n "$(write_conf)" ]; then
    log "wrote $CONF"
    stop_daemon slurmd /run/slurmd.pid
    stop_daemon slurmctld /run/slurmctld.pid
  fi
  start_daemons
  wait_idle
  log "versions: $(sinfo --version), $(munged --version 2>&1 | head -n1)"
  sinfo
}

main "$@"
