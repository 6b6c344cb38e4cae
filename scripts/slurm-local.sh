#!/usr/bin/env bash
# A real single-node Slurm (22.05, Debian 12) on localhost for specc's tests and CI:
# munge + slurmctld + slurmd, and accounting (slurmdbd + MariaDB) so that submitit can
# see job states (without it a cancelled job leaves `result()` waiting forever).
#
#   scripts/slurm-local.sh start    install missing packages, write configs, start daemons (idempotent)
#   scripts/slurm-local.sh stop     stop the daemons this script started, by the PIDs in their pidfiles
#   scripts/slurm-local.sh status   print daemon and node state; exit 0 only if the node is usable
#
# Needs root (it installs Debian packages and runs the daemons as root). Settings follow
# the verified recipe in shared/notes/slurm-local-cluster.md, notably:
#   AuthInfo=cred_expire=5 + sched_interval=2  requeued jobs restart in ~8 s, not ~150 s;
#   DependencyParameters=kill_invalid_depend   dependants of a failed job are cancelled;
#   MailProg=/bin/true                         slurmctld refuses to start without a valid one.
# SLURM_ACCOUNTING=0 skips slurmdbd and MariaDB (job states then read UNKNOWN in submitit).
set -euo pipefail

ACCOUNTING="${SLURM_ACCOUNTING:-1}"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
DB_PASSWORD=slurm

log() { echo "slurm-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes -------------------------------------------------------------------------

# pid_alive PIDFILE NAME: the pid in PIDFILE runs a program called NAME.
pid_alive() {
  local pidfile="$1" name="$2" pid
  [ -r "$pidfile" ] || return 1
  pid="$(tr -dc '0-9' <"$pidfile")"
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]
}

# stop_pidfile PIDFILE NAME: SIGTERM the daemon, wait up to 20 s, then SIGKILL it.
stop_pidfile() {
  local pidfile="$1" name="$2" pid
  if ! pid_alive "$pidfile" "$name"; then
    return 0
  fi
  pid="$(tr -dc '0-9' <"$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    [ -d "/proc/$pid" ] || { log "stopped $name ($pid)"; return 0; }
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  log "killed $name ($pid)"
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_for() {
  local what="$1" seconds="$2"
  shift 2
  local tries=$((seconds * 5))
  for _ in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  die "$what did not come up within ${seconds}s (logs in $LOG_DIR)"
}

# --- packages --------------------------------------------------------------------------

packages_needed() {
  local wanted=(slurmctld slurmd slurm-client munge)
  if [ "$ACCOUNTING" = 1 ]; then
    wanted+=(slurmdbd mariadb-server)
  fi
  local missing=()
  for package in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$package")
    fi
  done
  echo "${missing[@]}"
}

install_packages() {
  local missing
  missing="$(packages_needed)"
  [ -z "$missing" ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found; install Slurm ($missing) by hand"
  log "installing $missing"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086  # a list of package names
  if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
}

# --- configuration ---------------------------------------------------------------------

# node_line: this machine's NodeName line, with the CPU topology slurmd itself reports
# (giving only CPUs= makes slurmd log "reconfigured socket/core boundaries").
node_line() {
  local host probe
  host="$(hostname -s)"
  probe="$(slurmd -C | head -n1)"
  local fields=""
  for key in CPUs Boards SocketsPerBoard CoresPerSocket ThreadsPerCore RealMemory; do
    local value
    value="$(tr ' ' '\n' <<<"$probe" | sed -n "s/^$key=//p")"
    [ -n "$value" ] && fields+=" $key=$value"
  done
  echo "NodeName=$host NodeAddr=127.0.0.1$fields State=UNKNOWN"
}

slurm_conf() {
  local host accounting
  host="$(hostname -s)"
  if [ "$ACCOUNTING" = 1 ]; then
    accounting=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost'
  else
    accounting='AccountingStorageType=accounting_storage/none'
  fi
  cat <<EOF
# Written by specc's scripts/slurm-local.sh; regenerated on every start.
ClusterName=localcluster
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
DependencyParameters=kill_invalid_depend
$accounting
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
$(node_line)
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

slurmdbd_conf() {
  cat <<EOF
# Written by specc's scripts/slurm-local.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
EOF
}

# write_if_changed FILE MODE: replace FILE with stdin when different; exit status 0 if it changed.
write_if_changed() {
  local file="$1" mode="$2" temporary
  temporary="$(mktemp "$file.XXXXXX")"
  cat >"$temporary"
  chmod "$mode" "$temporary"
  if [ -f "$file" ] && cmp -s "$temporary" "$file"; then
    rm -f "$temporary"
    return 1
  fi
  mv -f "$temporary" "$file"
  return 0
}

# --- daemons ---------------------------------------------------------------------------

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  pid_alive /run/munge/munged.pid munged && return 0
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  wait_for munged 10 munge -n
}

start_mariadb() {
  if ! pid_alive /run/mysqld/mysqld.pid mariadbd; then
    install -d -o mysql -g mysql /run/mysqld
    setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
      >>"$LOG_DIR/mariadb.log" 2>&1 </dev/null &
    wait_for mariadbd 30 mariadb -u root -e 'SELECT 1'
  fi
  # ALTER as well as CREATE: CREATE USER IF NOT EXISTS keeps an old password.
  mariadb -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurm_daemons() {
  local restart="$1"
  if [ "$restart" = 1 ]; then
    stop_pidfile /run/slurmd.pid slurmd
    stop_pidfile /run/slurmctld.pid slurmctld
  fi
  if [ "$ACCOUNTING" = 1 ] && ! pid_alive /run/slurmdbd.pid slurmdbd; then
    /usr/sbin/slurmdbd
    wait_for slurmdbd 30 sacctmgr -n list cluster
  fi
  pid_alive /run/slurmctld.pid slurmctld || /usr/sbin/slurmctld
  wait_for slurmctld 30 scontrol ping
  pid_alive /run/slurmd.pid slurmd || /usr/sbin/slurmd
  wait_for "the node" 30 node_usable
}

node_usable() {
  local state
  state="$(sinfo -h -N -o '%T' 2>/dev/null | head -n1)"
  case "$state" in
    idle|mixed|allocated|completing) return 0 ;;
    *) return 1 ;;
  esac
}

# --- commands --------------------------------------------------------------------------

cmd_start() {
  [ "$(id -u)" = 0 ] || die "must run as root (installs packages and runs the Slurm daemons)"
  install_packages
  install -d "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
  local changed=0
  if slurm_conf | write_if_changed "$CONF_DIR/slurm.conf" 644; then
    changed=1
  fi
  if [ "$ACCOUNTING" = 1 ] && slurmdbd_conf | write_if_changed "$CONF_DIR/slurmdbd.conf" 600; then
    stop_pidfile /run/slurmdbd.pid slurmdbd
  fi
  start_munge
  if [ "$ACCOUNTING" = 1 ]; then
    start_mariadb
  fi
  start_slurm_daemons "$changed"
  # A node left DOWN/DRAIN by an earlier crash comes back with ReturnToService=2; make sure.
  scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
  log "up: $(sinfo -h -o '%P %a %D %T %N' | head -n1)"
}

cmd_stop() {
  stop_pidfile /run/slurmd.pid slurmd
  stop_pidfile /run/slurmctld.pid slurmctld
  stop_pidfile /run/slurmdbd.pid slurmdbd
  stop_pidfile /run/mysqld/mysqld.pid mariadbd
  stop_pidfile /run/munge/munged.pid munged
}

cmd_status() {
  local ok=0
  for entry in munged:/run/munge/munged.pid mariadbd:/run/mysqld/mysqld.pid \
               slurmdbd:/run/slurmdbd.pid slurmctld:/run/slurmctld.pid slurmd:/run/slurmd.pid; do
    local name="${entry%%:*}" pidfile="${entry#*:}"
    if pid_alive "$pidfile" "$name"; then
      echo "$name: running ($(tr -dc '0-9' <"$pidfile"))"
    else
      echo "$name: stopped"
    fi
  done
  if command -v sinfo >/dev/null && node_usable; then
    sinfo -h -o '%P %a %D %T %N'
  else
    echo "node: not usable"
    ok=1
  fi
  return "$ok"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 1 ;;
esac
