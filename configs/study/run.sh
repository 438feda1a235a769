#!/usr/bin/env bash
# The whole offline study, in order; every step resumes (rerun this script after an interruption).
# Usage: configs/study/run.sh [ROOT]   (default runs/study; run from the repository root)
set -euo pipefail
ROOT="${1:-runs/study}"
A="root=$ROOT"
time python -m synth_jax.data.digit_styles "$ROOT/data"
# synthetic sets from the shipped generator (synth_jax/assets/digits_generator)
synth-jax generate --config "configs/study/generate.py:set=template,$A"
synth-jax prompts  --config configs/study/prompts.py:set=diversified --config.workdir="$ROOT/prompts/diversified"
synth-jax generate --config "configs/study/generate.py:set=diversified,$A"
synth-jax invert   --config "configs/study/invert.py:$A"
synth-jax prompts  --config configs/study/prompts.py:set=dsi --config.workdir="$ROOT/prompts/dsi"
synth-jax generate --config "configs/study/generate.py:set=dsi,$A"
synth-jax finetune --config "configs/study/finetune.py:$A"
synth-jax generate --config "configs/study/generate.py:set=finetuned,$A"
# the sweeps (3 seeds each) in two lanes: one point keeps about one core busy (small convolutions,
# batch 32), so two processes use both cores of a 2-core machine; LANES=1 runs them one by one.
lane() { for s in "$@"; do synth-jax sweep --config "configs/study/$s.py:$A"; done; }
if [ "${LANES:-2}" = 1 ]; then
  lane li_methods li_volume li_fewshot li_dsi yu_prompts yu_auxbn yu_finetune
else
  lane li_methods li_dsi yu_prompts yu_finetune > "$ROOT/lane1.log" 2>&1 &
  one=$!
  lane li_fewshot li_volume yu_auxbn > "$ROOT/lane2.log" 2>&1 &
  two=$!
  wait "$one" || { echo "lane 1 failed: $ROOT/lane1.log" >&2; exit 1; }
  wait "$two" || { echo "lane 2 failed: $ROOT/lane2.log" >&2; exit 1; }
fi
synth-jax report "$ROOT"
