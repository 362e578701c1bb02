#!/usr/bin/env bash
# A one-node SLURM cluster on loopback for the tests: `tests/slurm_cluster.sh start DIR` installs what is
# missing from Debian's packages (as root), writes slurm.conf and slurmdbd.conf, starts MariaDB, munge,
# slurmdbd, slurmctld and slurmd, registers the cluster, an account and root in the accounting database, and
# waits until the node is idle; `tests/slurm_cluster.sh stop DIR` stops them all. DIR holds the state,
# configuration and logs. Exit status 3: this machine cannot run one (not root, or no packages).
set -euo pipefail
action=$1 dir=$(realpath -m "$2")
node=$(hostname -s)
# munged runs as the munge user, which must reach its key and log through every parent folder: not DIR's.
munge_dir=/run/mifeatures-munge
export SLURM_CONF="$dir/etc/slurm.conf"

stop() {
  for pidfile in "$dir"/run/slurmd.pid "$dir"/run/slurmctld.pid "$dir"/run/slurmdbd.pid "$munge_dir"/munged.pid \
                 "$dir"/run/mariadb.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
}

if [ "$action" = stop ]; then
  stop
  [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ] && rm /etc/slurm/slurm.conf
  exit 0
fi

if [ "$(id -u)" != 0 ]; then echo "not root: cannot start SLURM daemons" >&2; exit 3; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server; } \
    >/dev/null 2>&1 \
    || { echo "cannot install slurm-wlm, slurmdbd, munge and mariadb-server" >&2; exit 3; }
fi
mkdir -p "$dir"/{etc,run,log,spool/ctld,spool/d,mysql} "$munge_dir" /run/munge

# munge: the credentials every daemon and client authenticates with.
[ -f "$munge_dir/munge.key" ] || dd if=/dev/urandom of="$munge_dir/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$munge_dir" /run/munge && chmod 700 "$munge_dir" && chmod 400 "$munge_dir/munge.key"
su -s /bin/sh munge -c "munged --key-file=$munge_dir/munge.key --pid-file=$munge_dir/munged.pid \
  --log-file=$munge_dir/munged.log --socket=/run/munge/munge.socket.2 --force"

# MariaDB on a socket of its own, for slurmdbd's accounting (sacct, sacctmgr).
[ -d "$dir/mysql/mysql" ] || mariadb-install-db --user=root --datadir="$dir/mysql" >/dev/null
mariadbd --user=root --datadir="$dir/mysql" --socket="$dir/run/mysql.sock" --pid-file="$dir/run/mariadb.pid" \
  --skip-networking=0 --bind-address=127.0.0.1 --port=3307 --log-error="$dir/log/mariadb.log" &
for _ in $(seq 60); do mariadb --socket="$dir/run/mysql.sock" -e "select 1" >/dev/null 2>&1 && break; sleep 0.5; done
mariadb --socket="$dir/run/mysql.sock" -e "create user if not exists 'slurm'@'localhost' identified by 'slurm';
  grant all on slurm_acct_db.* to 'slurm'@'localhost'; create user if not exists 'slurm'@'127.0.0.1'
  identified by 'slurm'; grant all on slurm_acct_db.* to 'slurm'@'127.0.0.1'; flush privileges;"

memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
cat > "$dir/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=/run/munge/munge.socket.2
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/run/slurmdbd.pid
EOF
chmod 600 "$dir/etc/slurmdbd.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=mifeatures
SlurmctldHost=$node
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=/run/munge/munge.socket.2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Memory is enforced by polling each job's use; a job past its request is killed (OUT_OF_MEMORY).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations
# sacct shows the plugin's --comment (rule_NAME_wildcards_…), by which the tests find each rule's jobs.
AccountingStoreFlags=job_comment
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
ReturnToService=2
MinJobAge=600
KillWait=5
SchedulerType=sched/backfill
NodeName=$node CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

# Job steps (srun inside a batch job) read the configuration from its default place, not from SLURM_CONF.
mkdir -p /etc/slurm && ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf
slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -i add cluster mifeatures >/dev/null 2>&1 || true
sacctmgr -i add account tests cluster=mifeatures >/dev/null 2>&1 || true
sacctmgr -i add user root account=tests defaultaccount=tests >/dev/null 2>&1 || true
slurmctld
slurmd
for _ in $(seq 120); do
  [ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" = idle ] && { echo "SLURM_CONF=$SLURM_CONF"; exit 0; }
  sleep 0.5
done
echo "the node did not become idle: see $dir/log" >&2
stop
exit 1
