#!/usr/bin/env bash
# A real Slurm cluster (22.05, Debian 12) on localhost for specc's tests and CI: munge +
# slurmctld + one slurmd per node, and accounting (slurmdbd + MariaDB) so that submitit can
# see job states (without it a cancelled job leaves `result()` waiting forever).
#
# Several nodes on one machine: Slurm's multiple-slurmd mode (Debian's build has it: each
# node is a NodeName with its own Port, and `slurmd -N NAME` runs it; %n in the slurmd
# spool, pid and log paths keeps them apart). Nodes are specc-n1 .. specc-nN, all at
# 127.0.0.1, named in /etc/hosts so that a job's rendezvous at its head node resolves;
# nothing listens beyond the loopback interface's addresses. SLURM_LOCAL_NODES=N (default 3:
# two for the 2-node tests and a spare that takes over when one of them is killed).
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
#
# SLURM_LOCAL_DIR=DIR runs a second, private cluster beside the system one (a shared
# development machine): its config, state, logs and pidfiles under DIR, its ports from
# SLURM_LOCAL_PORT_BASE (default 7817), its own slurmdbd; munge and MariaDB shared (slurmdbd reads
# the slurmdbd.conf beside $SLURM_CONF). Point the Slurm commands at it with
# SLURM_CONF=DIR/etc/slurm.conf (`status` prints it).
set -euo pipefail

ACCOUNTING="${SLURM_ACCOUNTING:-1}"
NODES="${SLURM_LOCAL_NODES:-3}"
NODE_PREFIX=specc-n
LOCAL_DIR="${SLURM_LOCAL_DIR:-}"
if [ -n "$LOCAL_DIR" ]; then
  LOCAL_DIR="$(realpath -m "$LOCAL_DIR")"
  CONF_DIR="$LOCAL_DIR/etc" LOG_DIR="$LOCAL_DIR/log" STATE_DIR="$LOCAL_DIR/state"
  SPOOL_DIR="$LOCAL_DIR/spool" RUN_DIR="$LOCAL_DIR/run"
  PORT_BASE="${SLURM_LOCAL_PORT_BASE:-7817}" CLUSTER="specc$PORT_BASE"
else
  CONF_DIR=/etc/slurm LOG_DIR=/var/log/slurm STATE_DIR=/var/spool/slurmctld
  SPOOL_DIR=/var/spool/slurmd RUN_DIR=/run PORT_BASE=6817 CLUSTER=localcluster
fi
export SLURM_CONF="$CONF_DIR/slurm.conf"
FIRST_NODE_PORT=$((PORT_BASE + 13))
HOSTS_MARK="# specc scripts/slurm-local.sh $CLUSTER"
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

# node_names: specc-n1 .. specc-nN, one per line.
node_names() {
  seq 1 "$NODES" | sed "s/^/$NODE_PREFIX/"
}

# node_lines: one NodeName line per node, all on this machine (own port each), with the CPU
# topology slurmd itself reports (giving only CPUs= makes slurmd log "reconfigured socket/core
# boundaries").
node_lines() {
  local host probe fields="" index=0
  host="$(hostname -s)"
  probe="$(slurmd -C | head -n1)"
  for key in CPUs Boards SocketsPerBoard CoresPerSocket ThreadsPerCore RealMemory; do
    local value
    value="$(tr ' ' '\n' <<<"$probe" | sed -n "s/^$key=//p")"
    [ -n "$value" ] && fields+=" $key=$value"
  done
  for name in $(node_names); do
    echo "NodeName=$name NodeHostname=$host NodeAddr=127.0.0.1 Port=$((FIRST_NODE_PORT + index))$fields State=UNKNOWN"
    index=$((index + 1))
  done
}

# hosts_entry: make the node names resolve to 127.0.0.1 (a job's torchrun meets at its head node
# by name). /etc/hosts is rewritten in place, not replaced: containers bind-mount it.
hosts_entry() {
  local line kept
  line="127.0.0.1 $(node_names | tr '\n' ' ')$HOSTS_MARK"
  grep -qxF "$line" /etc/hosts && return 0
  kept="$(grep -vF "$HOSTS_MARK" /etc/hosts || true)"
  printf '%s\n%s\n' "$kept" "$line" >/etc/hosts
}

remove_hosts_entry() {
  local kept
  grep -qF "$HOSTS_MARK" /etc/hosts 2>/dev/null || return 0
  kept="$(grep -vF "$HOSTS_MARK" /etc/hosts || true)"
  printf '%s\n' "$kept" >/etc/hosts
}

slurm_conf() {
  local host accounting
  host="$(hostname -s)"
  if [ "$ACCOUNTING" = 1 ]; then
    accounting=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nAccountingStoragePort='"$((PORT_BASE + 2))"
  else
    accounting='AccountingStorageType=accounting_storage/none'
  fi
  cat <<EOF
# Written by specc's scripts/slurm-local.sh; regenerated on every start.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR/%n
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldPort=$PORT_BASE
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
$(node_lines)
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

slurmdbd_conf() {
  cat <<EOF
# Written by specc's scripts/slurm-local.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=$((PORT_BASE + 2))
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
PidFile=$RUN_DIR/slurmdbd.pid
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

# stop_slurmds: every slurmd this script started (the pre-multi-node /run/slurmd.pid too).
stop_slurmds() {
  local pidfile
  for pidfile in "$RUN_DIR/slurmd.pid" "$RUN_DIR/slurmd-$NODE_PREFIX"*.pid; do
    [ -e "$pidfile" ] && stop_pidfile "$pidfile" slurmd
  done
  return 0
}

start_slurm_daemons() {
  local restart="$1"
  if [ "$restart" = 1 ]; then
    stop_slurmds
    stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
  fi
  if [ "$ACCOUNTING" = 1 ] && ! pid_alive "$RUN_DIR/slurmdbd.pid" slurmdbd; then
    /usr/sbin/slurmdbd
    wait_for slurmdbd 30 sacctmgr -n list cluster
  fi
  pid_alive "$RUN_DIR/slurmctld.pid" slurmctld || /usr/sbin/slurmctld -f "$SLURM_CONF"
  wait_for slurmctld 30 scontrol ping
  for name in $(node_names); do
    install -d "$SPOOL_DIR/$name"
    pid_alive "$RUN_DIR/slurmd-$name.pid" slurmd || /usr/sbin/slurmd -f "$SLURM_CONF" -N "$name"
    # a node left DOWN by a test that killed it returns with ReturnToService=2; make sure
    scontrol update NodeName="$name" State=RESUME >/dev/null 2>&1 || true
  done
  wait_for "the nodes" 30 nodes_usable
}

# nodes_usable: every configured node is up (idle, mixed, allocated or completing).
nodes_usable() {
  local usable
  usable="$(sinfo -h -N -o '%T' 2>/dev/null | grep -cE '^(idle|mixed|allocated|completing)$' || true)"
  [ "$usable" -ge "$NODES" ]
}

# --- commands --------------------------------------------------------------------------

cmd_start() {
  [ "$(id -u)" = 0 ] || die "must run as root (installs packages and runs the Slurm daemons)"
  install_packages
  install -d "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR" "$RUN_DIR"
  local changed=0
  if slurm_conf | write_if_changed "$CONF_DIR/slurm.conf" 644; then
    changed=1
  fi
  if [ "$ACCOUNTING" = 1 ] && slurmdbd_conf | write_if_changed "$CONF_DIR/slurmdbd.conf" 600; then
    stop_pidfile "$RUN_DIR/slurmdbd.pid" slurmdbd
  fi
  start_munge
  if [ "$ACCOUNTING" = 1 ]; then
    start_mariadb
  fi
  hosts_entry
  start_slurm_daemons "$changed"
  log "up: $(sinfo -h -o '%P %a %D %T %N' | head -n1)"
}

cmd_stop() {
  stop_slurmds
  stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
  stop_pidfile "$RUN_DIR/slurmdbd.pid" slurmdbd
  remove_hosts_entry
  [ -n "$LOCAL_DIR" ] && return 0  # a private cluster leaves the shared munged (and MariaDB) alone
  stop_pidfile /run/mysqld/mysqld.pid mariadbd
  stop_pidfile /run/munge/munged.pid munged
}

cmd_status() {
  local ok=0
  for entry in munged:/run/munge/munged.pid mariadbd:/run/mysqld/mysqld.pid \
               slurmdbd:$RUN_DIR/slurmdbd.pid slurmctld:$RUN_DIR/slurmctld.pid; do
    local name="${entry%%:*}" pidfile="${entry#*:}"
    if pid_alive "$pidfile" "$name"; then
      echo "$name: running ($(tr -dc '0-9' <"$pidfile"))"
    else
      echo "$name: stopped"
    fi
  done
  for name in $(node_names); do
    if pid_alive "$RUN_DIR/slurmd-$name.pid" slurmd; then
      echo "slurmd $name: running ($(tr -dc '0-9' <"$RUN_DIR/slurmd-$name.pid"))"
    else
      echo "slurmd $name: stopped"
    fi
  done
  if command -v sinfo >/dev/null && nodes_usable; then
    sinfo -h -o '%P %a %D %T %N'
    echo "SLURM_CONF=$SLURM_CONF"
  else
    echo "nodes: not all usable"
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
