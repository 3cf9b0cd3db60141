#!/usr/bin/env bash
# Reproduce the shipped weights (model/weights/) from ../shared/data.
# CPU, 2 threads, fp32 (measured faster than bf16 autocast for this small model on this CPU),
# seed 0, 6000 steps of 64 chips (about 25-35 min on 2 shared cores). Re-running the same command resumes from the run folder's
# checkpoint; at the end the weights, config, loss CSV and loss-curve PNG are copied to
# model/weights/. Then `scripts/train_weights.sh eval` writes the evaluation report.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
RUN=${RUN:-build/train_nano}
if [[ "${1:-train}" == "eval" ]]; then
  exec "$PY" -m clay_search.cli.main eval --weights model/weights --data "$DATA" \
    --out model/weights/eval_report.json --threads 2
fi
"$PY" -m clay_search.cli.main train --data "$DATA" --out "$RUN" --size nano --patch-size 8 \
  --chip 64 --steps 6000 --batch-size 64 --lr 1e-3 --warmup 150 --seed 0 --precision fp32 \
  --threads 2 --max-time 2400 --export model/weights
