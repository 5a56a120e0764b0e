#!/usr/bin/env bash
# The steps-to-coherence records of every polymnist10 row (bench_coherence.py, quick's scale) and the sampler
# table of SBM-VAE, SBM-RAE and MLD (bench_sampler_quality.py), on one CUDA machine, all within BUDGET_S seconds.
# Models train in parallel processes (one CPU thread each) sharing the GPU (the -T variant follows the -C one and
# loads the autoencoders and score net they share from the artifact store); each sampler table starts as soon as
# its model's record stops (target reached, cap, or RESERVE_S seconds before the deadline: the model's last
# checkpoint is evaluated). Every process gets the time left to the deadline, so a slow row is cut, not the run;
# its trace keeps the points it reached. STEPS and CAP (the earlier stages' steps; a cap on every last stage)
# shrink the run for a check of this script on a CPU; ROWS=a,b runs only those rows.
#
#   MNIST=path/to/mnist.pkl.gz CLASSIFIERS=~/.mmbench/classifiers OUT=out BUDGET_S=480 bash benchmarks/records_cuda.sh
#
# Results: $OUT/results.tgz (logs, traces, sampler tables) and $OUT/summary.txt.
set -uo pipefail
START=$(date +%s)
BUDGET_S=${BUDGET_S:-480}
DEVICE=${DEVICE:-cuda}
EVAL_N=${EVAL_N:-500}
STEPS=${STEPS:-3000}
CAP=${CAP:-1000000}
RESERVE_S=${RESERVE_S:-120}
SAMPLER_N=${SAMPLER_N:-500}
OUT=${OUT:-/tmp/records-out}
WORK=${WORK:-/tmp/mmbench-records}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK/logs" "$WORK/state" "$WORK/tables"
export MMBENCH_HOME=$WORK/home PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} MLFLOW_DISABLE_TELEMETRY=true
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
cd "$REPO"

left() { echo $((START + BUDGET_S - ${1:-0} - $(date +%s))); }
say() { echo "[$(( $(date +%s) - START )) s] $*" | tee -a "$WORK/logs/driver.txt"; }

mkdir -p "$MMBENCH_HOME/classifiers"
cp -r "${CLASSIFIERS:?set CLASSIFIERS to a folder holding polymnist10-eval.*}"/. "$MMBENCH_HOME/classifiers/"
# BACKGROUNDS: a folder of the ten background images, for a machine whose scikit-image lacks the bundled ones
$PY -m mmbench data prepare --dataset polymnist --modalities 10 --mnist "${MNIST:?set MNIST}" \
    > "$WORK/logs/data.txt" 2>&1 \
  || { [ -n "${BACKGROUNDS:-}" ] && say "bundled backgrounds failed; using $BACKGROUNDS" \
       && $PY -m mmbench data prepare --dataset polymnist --modalities 10 --mnist "$MNIST" --backgrounds "$BACKGROUNDS" \
          >> "$WORK/logs/data.txt" 2>&1; } \
  || { say "data prepare failed"; tail -20 "$WORK/logs/data.txt"; }
say "data ready; $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"

wanted() { [ -z "${ROWS:-}" ] || [[ ",$ROWS," == *",$1,"* ]]; }  # ROWS=a,b: only these rows (a check)

record() {  # model cap eval_every reserve_s [--set ...]: one row's record, cut reserve_s before the deadline
  wanted "$1" || return 0
  local name=$1 cap=$(( $2 < CAP ? $2 : CAP )) every=$(( $3 < CAP ? $3 : CAP )) reserve=$4; shift 4
  local label=$name${1:+-$(echo "${*:2}" | tr -c 'a-z0-9\n' '-')} budget
  budget=$(left "$reserve")
  [ "$budget" -gt 5 ] || { say "record $label skipped: no time left"; return; }
  timeout -s TERM -k 15 "$budget" $PY benchmarks/bench_coherence.py --models "$name" --device "$DEVICE" --width 0.25 \
      --batch-size 64 --steps "$STEPS" --max-steps "$cap" --eval-every "$every" --log-every "${LOG_EVERY:-50}" --eval-n "$EVAL_N" --threads 1 "$@" \
      --state "$WORK/state" --artifacts "$WORK/artifacts" --json "$WORK/tables/records-$label.json" \
      > "$WORK/logs/record-$label.txt" 2>&1
  say "record $label ended (exit $?)"
}

samplers() {  # model: the sampler table on the model's last checkpoint
  wanted "$1" || return 0
  local name=$1 folder budget
  folder=$(ls -d "$WORK/state/$name"-???????????? 2>/dev/null | head -1)  # <name>-<12-hex hash>, not <name>-c-…
  budget=$(left)
  [ -n "$folder" ] && [ "$budget" -gt 5 ] || { say "samplers $name skipped (state: ${folder:-none}, ${budget} s left)"; return; }
  timeout -s TERM -k 15 "$budget" $PY benchmarks/bench_sampler_quality.py --dataset polymnist10 --state "$folder" \
      --artifacts "$WORK/artifacts" --device "$DEVICE" --n "$SAMPLER_N" --n-uncond "$SAMPLER_N" --eval-batch 250 \
      --threads 1 > "$WORK/tables/samplers-$name.md" 2>&1
  say "samplers $name ended (exit $?)"
}

(record sbm-vae 8000 500 "$RESERVE_S"; samplers sbm-vae) &
(record sbm-vae-c 3000 750 0; record sbm-vae-t 3000 750 0) &
(record sbm-rae 8000 500 "$RESERVE_S"; samplers sbm-rae) &
(record sbm-rae-c 3000 750 0; record sbm-rae-t 3000 750 0) &
(record mld 8000 500 "$RESERVE_S"; samplers mld) &
(record mvae 20000 1000 0) &
(record mvtcae 12000 500 0) &
(record mopoe 16000 1000 0) &
(record mmvae 12000 500 0) &
(record mmvaeplus 12000 500 0) &
(record mmvae 12000 500 0 --set cross_targets=2; record mmvaeplus 12000 500 0 --set cross_targets=2) &
wait

say "done; packing"
{
  for f in "$WORK"/logs/record-*.txt; do echo "== $(basename "$f")"; grep -E "coherence/loo/mean|done after|best|@" "$f" | tail -25; done
  for f in "$WORK"/tables/samplers-*.md; do echo "== $(basename "$f")"; cat "$f"; done
} > "$OUT/summary.txt" 2>&1
tar -czf "$OUT/results.tgz" -C "$WORK" logs tables $(cd "$WORK" && ls state/*/trace.json 2>/dev/null)
say "packed $(du -h "$OUT/results.tgz" | cut -f1)"
