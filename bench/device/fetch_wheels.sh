#!/usr/bin/env bash
# Run HERE (a machine with the package registry), before a device lease: downloads the Python 3.12
# x86-64 wheels the device image lacks (/work/.library/device/KINDS.md lists what it has: jax,
# flax, optax, orbax, torch, transformers, ... but not these) into .whl/ (git-ignored), which
# bench/device/check.sh installs there with --no-index. ~10 MB.
#
#   bash bench/device/fetch_wheels.sh && du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
# synth_jax.config -> ml_collections; the PyTorch references -> diffusers (-> importlib_metadata
# -> zipp); models/clip.py's tokenizer cleanup -> ftfy.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl ml_collections diffusers importlib_metadata zipp ftfy
ls .whl
