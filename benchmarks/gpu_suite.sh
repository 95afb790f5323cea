#!/usr/bin/env bash
# Everything that needs the GPU, in one call (device time is scarce):
#   PYTHONPATH=. bash benchmarks/gpu_suite.sh   [results under benchmarks/results/, logs under $OUT]
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/device.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
python benchmarks/gpu_check_model.py 2>&1 | tee "$OUT/check_model.log"
python -m pytest -q -x tests/test_fused_adam.py -k "cuda" 2>&1 | tail -3 | tee "$OUT/pytest_cuda.log"
# The user's command end to end on the GPU (full GPT-1 size from scratch: no weights here), on
# synthetic Story Cloze files encoded beforehand with the real vocabulary (.gpu_carry: data/, vocab/,
# cache/; this machine has no spaCy, and the encoded cache makes it unnecessary).
if [ -d .gpu_carry ]; then
  for cfg in "--backend auto --compile" "--backend torch --no-compile"; do
    python -m gpt1_fast.train --data_dir .gpu_carry/data --cache_dir .gpu_carry/cache \
      --encoder_path .gpu_carry/vocab/encoder_bpe_40000.json --bpe_path .gpu_carry/vocab/vocab_40000.bpe \
      --from_scratch --n_iter 3 --submit --analysis --desc gpu --log_dir /tmp/log --save_dir /tmp/save \
      --submission_dir /tmp/sub $cfg 2>&1 | tail -12 | tee -a "$OUT/train.log"
  done
fi
for b in adam layernorm_gelu attention train_step; do
  python -m benchmarks "$b" 2>&1 | tee "$OUT/bench_$b.log" | tail -40
done
# The device tool returns at most 8 files: one archive of results and logs.
tar czf "$OUT/gpu_suite.tgz" benchmarks/results benchmarks/NOTES.md -C "$OUT" $(cd "$OUT" && ls *.log *.txt)
