#!/usr/bin/env bash
# Run the SLURM job-array recipe of docs/research_tier.md (section 5) on a one-node SLURM cluster
# started on this machine, on a small pocket-tier CPU slice, and check that the merged shards equal
# an unsharded run of the same slice row for row (every column but train_s).
#
# NOT run in CI. Needs root and apt (Debian packages slurm-wlm and munge; installed if missing).
# Everything lives in one folder of its own (default /tmp/mpl-slurm, or $MPL_SLURM_DIR): slurm.conf,
# the munge key and socket, the daemons' state, logs and pid files, and both output folders. The
# daemons (munged, slurmctld, slurmd) run as root, addressed on loopback (127.0.0.1; SLURM has no
# option to bind its ports 6817/6818 to one interface, so they listen on all while the script runs),
# and on exit, also on failure or Ctrl-C, the jobs are cancelled and the daemons stopped.
# Idempotent: a rerun stops what a previous run left (found by pid files), clears the outputs and
# runs again.
#
#   sudo scripts/slurm_local.sh            # ends with "identical" and exit 0, or exit 1 naming a difference
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${MPL_SLURM_DIR:-/tmp/mpl-slurm}
HOST=$(hostname -s)
SLICE=(--suite b2n --methods zsclip coop metaprompt --datasets fashion cards --seeds 1 2
       --max-steps 5 --workers 1)
N=4

[ "$(id -u)" = 0 ] || { echo "error: slurm_local.sh starts SLURM daemons as root — run it as root (sudo)"; exit 2; }
command -v metaprompt-lite >/dev/null || {
    echo "error: metaprompt-lite is not on PATH — pip install -e . in $REPO first"; exit 2; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update && apt-get install -y slurm-wlm munge
fi

stop_daemons() {
    # Cancel the jobs of this cluster (all of them are ours), then SIGTERM each daemon of ours by its
    # pid file, never by name.
    if [ -s "$WORK/run/slurmctld.pid" ] && kill -0 "$(cat "$WORK/run/slurmctld.pid")" 2>/dev/null; then
        SLURM_CONF="$WORK/slurm.conf" scancel --full --quiet \
            $(SLURM_CONF="$WORK/slurm.conf" squeue -h -o %A 2>/dev/null) 2>/dev/null || true
        for _ in $(seq 30); do
            [ -z "$(SLURM_CONF="$WORK/slurm.conf" squeue -h -o %A 2>/dev/null)" ] && break; sleep 1
        done
    fi
    for name in slurmd slurmctld munged; do
        if [ -s "$WORK/run/$name.pid" ]; then
            pid=$(cat "$WORK/run/$name.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            rm -f "$WORK/run/$name.pid"
        fi
    done
}
stop_daemons
trap stop_daemons EXIT
trap 'exit 1' INT TERM

rm -rf "$WORK/state" "$WORK/spool" "$WORK/log" "$WORK/shards" "$WORK/single"
mkdir -p "$WORK/run" "$WORK/state" "$WORK/spool" "$WORK/log" "$WORK/shards" "$WORK/single"
chmod 755 "$WORK" "$WORK/run"

# munge: a key of our own, a socket of our own (slurm finds it through AuthInfo).
[ -s "$WORK/munge.key" ] || mungekey --create --keyfile "$WORK/munge.key"
chmod 600 "$WORK/munge.key"
munged --key-file "$WORK/munge.key" --socket "$WORK/run/munge.sock" --pid-file "$WORK/run/munged.pid" \
    --log-file "$WORK/log/munged.log" --seed-file "$WORK/run/munged.seed" --force

export SLURM_CONF="$WORK/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=mpl-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$WORK/run/munge.sock
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=2 RealMemory=20000 State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -qx idle && break
    sleep 1
done
sinfo -h -o %T | grep -qx idle || {
    echo "error: the local SLURM node is not idle after 60 s — read $WORK/log/*.log"; sinfo; exit 1; }
sinfo

# The recipe's array script, for CPU: N shards, one CPU each, at most 2 at a time.
cat > "$WORK/bench-b2n.sbatch" <<EOF
#!/bin/bash
#SBATCH --job-name=mpl-b2n
#SBATCH --array=0-$((N - 1))%2
#SBATCH --cpus-per-task=1
#SBATCH --mem=4000
#SBATCH --output=$WORK/log/%x-%A_%a.out
set -euo pipefail
export OMP_NUM_THREADS=1
metaprompt-lite bench ${SLICE[*]} --out-dir $WORK/shards \\
    --shard \$((SLURM_ARRAY_TASK_ID+1))/\$SLURM_ARRAY_TASK_COUNT
EOF

cd "$REPO"
job=$(sbatch --parsable --chdir "$REPO" "$WORK/bench-b2n.sbatch")
echo "array job $job submitted ($N tasks)"
rc=0
sbatch --wait --dependency=afterany:"$job" --job-name=mpl-merge --chdir "$REPO" \
    --output="$WORK/log/%x-%j.out" --wrap "metaprompt-lite merge --out-dir $WORK/shards" || rc=$?
# One line per array task: id, state, exit code, start and end (at most 2 overlap).
scontrol -o show job "$job" | grep -oE "(ArrayTaskId|JobState|ExitCode|StartTime|EndTime)=[^ ]*" | paste -d' ' - - - - -
cat "$WORK"/log/mpl-merge-*.out
[ "$rc" = 0 ] || { echo "error: the merge job failed (exit $rc) — read $WORK/log/"; exit 1; }

# The same slice on this machine, unsharded.
OMP_NUM_THREADS=1 metaprompt-lite bench "${SLICE[@]}" --out-dir "$WORK/single" --no-report \
    > "$WORK/log/single.out" 2>&1 || { echo "error: the unsharded run failed — read $WORK/log/single.out"; exit 1; }
echo "unsharded: $(grep -c . "$WORK/single/b2n.csv") lines in $WORK/single/b2n.csv"

python - "$WORK/shards/b2n.csv" "$WORK/single/b2n.csv" <<'EOF'
"""Compare the merged and unsharded CSVs row for row, every column but train_s."""
import csv
import sys

merged, single = ([*csv.DictReader(open(path, newline=""))] for path in sys.argv[1:3])
skip = {"train_s"}
columns = [c for c in single[0] if c not in skip]
diffs = [(i, c, m.get(c), s[c]) for i, (m, s) in enumerate(zip(merged, single))
         for c in columns if m.get(c) != s[c]]
print(f"merged {len(merged)} rows, unsharded {len(single)} rows; compared {len(columns)} columns "
      f"({', '.join(columns)}); skipped {', '.join(sorted(skip))}")
for i, c, m, s in diffs[:10]:
    print(f"row {i + 1} {c}: merged {m!r} != unsharded {s!r}")
same = len(merged) == len(single) and list(merged[0]) == list(single[0]) and not diffs
print("identical" if same else f"DIFFERENT: {len(merged)} vs {len(single)} rows, {len(diffs)} cells differ")
sys.exit(0 if same else 1)
EOF
