#!/usr/bin/env bash
# The accelerator check, as ONE prepared command for a short device lease (15 min in all, 10 min a
# call). Run bench/device/fetch_wheels.sh here first; then, through the device tool:
#
#   run(command="bash bench/device/check.sh sd15 finetune invert", carry=[".whl"], timeout_s=590)
#   run(command="bash bench/device/check.sh sdxl", carry=[".whl"], timeout_s=590)
#
# Each item is one bench with its own time limit; each prints one JSON object, kept in
# $OUT/<item>.json (its log in $OUT/<item>.log), so an item that runs out of time loses only
# itself. The PyTorch references run eager (torch.compile's first compile alone can take minutes).
#   sd15      bench/generate.py: SD-1.5 shapes, 512 px, batch 16, 25 steps, bf16; attention xla and cudnn
#   sdxl      bench/generate.py --model sdxl: 1024 px, batch 4, steps 1,2,4,8,25 (few-step, issue 22)
#   finetune  bench/finetune.py: SD-1.5 UNet training step, 512 px, batch 32, remat off and on
#   invert    bench/invert.py: the DSI step, 512 px, batch 8
#   plan      synth-jax plan for configs/generate/base.py, batch 16 on 1 device: the planner's
#             estimate beside sd15's measurement
#   smoke     tiny shapes: checks this script on a CPU (OUT=/tmp/x bash bench/device/check.sh smoke)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-runs/device_check}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 SYNTH_JAX_NO_PROGRESS=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

item() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.log"
  local rc=$?
  # the bench's JSON is its last stdout line
  tail -n 1 "$OUT/$name.out" > "$OUT/$name.json"; rm -f "$OUT/$name.out"
  echo "$name: exit $rc after $((SECONDS - t0)) s (limit $limit)"
  [ $rc -eq 0 ] && cat "$OUT/$name.json" | head -c 1500 && echo || tail -n 5 "$OUT/$name.log"
}

for what in "$@"; do
  case $what in
    sd15) item sd15 240 python3 bench/generate.py --attention xla,cudnn --torch eager ;;
    sdxl) item sdxl 540 python3 bench/generate.py --model sdxl --resolution 1024 --batch 4 \
            --steps 1,2,4,8,25 --torch eager --repeats 2 ;;
    finetune) item finetune 200 python3 bench/finetune.py --torch_compile no ;;
    invert) item invert 150 python3 bench/invert.py ;;
    plan) item plan 120 python3 -m synth_jax.cli plan --config configs/generate/base.py:model=sd15 \
            --config.batch_size=16 --devices 1 --chip h100 ;;
    smoke)  # this script's mechanics on a CPU, in about a minute (tiny shapes, no references)
      item smoke_generate 300 python3 bench/generate.py --model tiny --resolution 16 --batch 2 \
        --steps 2 --torch none --repeats 1
      item smoke_finetune 300 python3 bench/finetune.py --model tiny --resolution 16 --batch 8 \
        --steps 2 --dtype fp32 --torch no ;;
    *) echo "unknown item $what (sd15 sdxl finetune invert plan smoke)"; exit 2 ;;
  esac
done
