#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster on localhost (Debian 12 / slurm-wlm 22.05).
# Usage: [WITH_DBD=0|1] [GPUS=N] [SLURM_CI_DIR=/tmp/slurm-ci] start_cluster.sh
#   WITH_DBD=1 (default): mariadb + slurmdbd, so `sacct` (the plugin's default status command) works
#   WITH_DBD=0          : no accounting DB; use snakemake --slurm-status-command squeue
#   GPUS=2 (default)    : the node declares N GPUs through gres (tty devices: Slurm only binds
#                         them, there is no real GPU) in a partition `gpu`; GPUS=0: no gres, no `gpu`
set -euo pipefail
WITH_DBD=${WITH_DBD:-1}
GPUS=${GPUS:-2}
D=${SLURM_CI_DIR:-/tmp/slurm-ci}
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

t0=$(date +%s)
# ---- 1. packages --------------------------------------------------------
PKGS="munge slurmctld slurmd slurm-client"
[ "$WITH_DBD" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
t1=$(date +%s); echo "[slurm-ci] packages installed in $((t1-t0))s"

# ---- 2. config ----------------------------------------------------------
$SUDO mkdir -p "$D"/{ctld,d,log}
HN=$(hostname -s)
MEM=$(( $(free -m | awk '/^Mem:/{print $2}') - 1024 ))   # leave 1 GiB margin
NCPU=$(nproc)
if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoreFlags=job_comment"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi
MARK="# written by actpat's tests/slurm/start_cluster.sh; stop_cluster.sh removes it"
if [ "$GPUS" -gt 0 ]; then
  GRES="GresTypes=gpu
AccountingStorageTRES=gres/gpu"
  NODE_GRES="Gres=gpu:${GPUS}"
  GPU_PARTITION="PartitionName=gpu Nodes=${HN} MaxTime=INFINITE State=UP"
  # any GPUS character devices will do: Slurm binds them and sets CUDA_VISIBLE_DEVICES
  $SUDO tee /etc/slurm/gres.conf >/dev/null <<EOF
$MARK
NodeName=${HN} Name=gpu File=/dev/tty[0-$((GPUS - 1))]
EOF
else
  GRES=""; NODE_GRES=""; GPU_PARTITION=""
  if [ -f /etc/slurm/gres.conf ] && grep -qF "$MARK" /etc/slurm/gres.conf; then $SUDO rm -f /etc/slurm/gres.conf; fi
fi
$SUDO tee /etc/slurm/slurm.conf >/dev/null <<EOF
$MARK
ClusterName=ci
SlurmctldHost=${HN}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$D/ctld
SlurmdSpoolDir=$D/d
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups needed:
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
$ACCT
$GRES
# keep finished jobs visible to squeue for 10 min (plugin's squeue mode needs >= 3x status interval)
MinJobAge=600
SlurmdTimeout=300
InactiveLimit=0
KillWait=30
Waittime=0
NodeName=${HN} NodeAddr=127.0.0.1 CPUs=${NCPU} RealMemory=${MEM} ${NODE_GRES} State=UNKNOWN
PartitionName=debug Nodes=${HN} Default=YES MaxTime=INFINITE State=UP
${GPU_PARTITION}
EOF

# ---- 3. munge -----------------------------------------------------------
[ -s /etc/munge/munge.key ] || $SUDO mungekey --create --keyfile=/etc/munge/munge.key
$SUDO chown munge:munge /etc/munge/munge.key; $SUDO chmod 400 /etc/munge/munge.key
$SUDO mkdir -p /run/munge; $SUDO chown munge:munge /run/munge; $SUDO chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  $SUDO runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  for i in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
cp /run/munge/munged.pid "$D/munged.pid" 2>/dev/null || true

# ---- 4. mariadb + slurmdbd (optional) -------------------------------------
if [ "$WITH_DBD" = 1 ]; then
  # mariadbd drops to user mysql: its pid/log files must be in a directory that user can reach
  # (not below $D, which may sit in a root-only folder such as pytest's /tmp/pytest-of-root)
  $SUDO mkdir -p /run/mysqld; $SUDO chown mysql:mysql /run/mysqld
  if ! mariadb-admin ping >/dev/null 2>&1; then
    nohup $SUDO /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql \
      --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/actpat-mariadbd.pid \
      --skip-networking --log-error=/run/mysqld/actpat-mariadb.err \
      --innodb-lock-wait-timeout=900 >/dev/null 2>&1 &
    for i in $(seq 100); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  $SUDO mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
                    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  $SUDO tee /etc/slurm/slurmdbd.conf >/dev/null <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$D/log/slurmdbd.log
PidFile=$D/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  $SUDO chmod 600 /etc/slurm/slurmdbd.conf
  $SUDO /usr/sbin/slurmdbd            # daemonizes, writes $D/slurmdbd.pid
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.2; done
fi

# ---- 5. slurmctld + slurmd ------------------------------------------------
$SUDO /usr/sbin/slurmctld           # daemonizes, writes $D/slurmctld.pid
for i in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
$SUDO /usr/sbin/slurmd              # daemonizes, writes $D/slurmd.pid
for i in $(seq 150); do
  [ "$(sinfo -h -n "$HN" -o %T 2>/dev/null)" = idle ] && break; sleep 0.2
done
sinfo
if [ "$WITH_DBD" = 1 ]; then
  # slurmctld auto-registers cluster "ci" with account/user root; add a named account too
  $SUDO sacctmgr -i add account ci Description=ci Organization=ci >/dev/null || true
  $SUDO sacctmgr -i add user "$(id -un)" account=ci >/dev/null || true
fi
srun -t 1 hostname >/dev/null
if [ "$GPUS" -gt 0 ]; then srun -t 1 -p gpu --gres=gpu:1 hostname >/dev/null; fi
t2=$(date +%s); echo "[slurm-ci] cluster up in $((t2-t1))s (total $((t2-t0))s)"
