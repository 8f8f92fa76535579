#!/usr/bin/env bash
# The one prepared GPU check (a lent H100 / H200): real-size graphs with random weights, each
# step time-boxed, figures printed as short tables and kept in $OUT/gpu_check.log.
#
# The device image has torch, timm, peft, accelerate, transformers but not diffusers or lpips:
# carry them as wheels (see the device tool's README), e.g. here, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .whl diffusers lpips
# then run with carry [".whl"]:   bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
log="${OUT:-/tmp}/gpu_check.log"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
run() {  # run SECONDS CMD...: one time-boxed step, its output kept
  local limit=$1; shift
  echo "=== $* (limit ${limit}s)" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | grep -v "it/s\]" | tee -a "$log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$log"
run 120 python3 -m pytest -q -p no:cacheprovider tests/degradation/test_cuda.py
run 90  python3 benchmarks/degradation.py --device cuda --batch-size 64 --skip-reference
run 150 python3 benchmarks/restore.py --base-model sd21-random --precision bf16 --repeats 3
run 180 python3 benchmarks/restore.py --base-model sd21-random --precision bf16 --repeats 3 --compile --large 0
run 150 python3 benchmarks/restore.py --base-model sd21-random --precision bf16 --repeats 3 --vs-diffusers --batches 1,8
run 120 python3 benchmarks/restore.py --base-model sd21-random --precision bf16 --repeats 5 --fuse-compare
run 150 python3 benchmarks/train_step.py --base-model sd21-random --size 512 --batch 4 --precision bf16 --only plain
run 120 python3 benchmarks/train_step.py --base-model sd21-random --size 512 --batch 1 --precision bf16 --only ckpt
echo "log: $log"
