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
# the sweeps (3 seeds each), then one report over all of them
for s in li_methods li_volume li_fewshot li_dsi yu_prompts yu_auxbn yu_finetune; do
  synth-jax sweep --config "configs/study/$s.py:$A"
done
synth-jax report "$ROOT"
