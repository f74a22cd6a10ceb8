#!/usr/bin/env bash
# Stop the daemons started by start_cluster.sh, by PID file (never by name).
D=${SLURM_CI_DIR:-/tmp/slurm-ci}
stop() { local f=$1; [ -s "$f" ] || return 0; local p; p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then kill "$p"; for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"; fi; rm -f "$f"; }
stop "$D/slurmd.pid"; stop "$D/slurmctld.pid"; stop "$D/slurmdbd.pid"; stop /run/mysqld/actpat-mariadbd.pid
stop /run/munge/munged.pid; rm -f "$D/munged.pid"
# the configuration this cluster's start wrote: left behind, every `scontrol` (the SLURM executor
# plugin calls it when Snakemake starts) waits 9 s for a controller that is gone
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf /etc/slurm/gres.conf; do
  if [ -f "$f" ] && grep -q "written by actpat's tests/slurm/start_cluster.sh" "$f" 2>/dev/null; then $SUDO rm -f "$f"; fi
done
exit 0
