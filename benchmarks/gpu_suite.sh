#!/usr/bin/env bash
# Everything gpt1_fast checks and measures on a CUDA GPU, in one run:
#   GPT1_FAST_COMMIT=<git rev-parse HEAD> bash benchmarks/gpu_suite.sh [STEP ...]
# (where the tree was copied without .git, the commit recorded in the results comes from that variable)
# STEPs: check train adam layernorm_gelu attention lm_head train_step pretrain generate (default: all, in that order).
#   check       TRITON_INTERPRET=0 pytest -m cuda tests (compiled kernels vs the reference, bf16, every
#               attention candidate for this GPU, determinism, torch.compile, the whole model), plus
#               the fused Adam extension's CUDA tests
#   train       the training command end to end at GPT-1 size on synthetic Story Cloze files encoded
#               beforehand (needs .gpu_carry/{data,cache,vocab}; skipped otherwise)
#   the others  python -m benchmarks <step>: results in benchmarks/results/
# Logs and results are archived to $OUT/gpu_suite.tgz after every step, so a run cut short keeps the
# steps already done.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
STEPS=${*:-check train adam layernorm_gelu attention lm_head train_step pretrain generate}
save() { tar czf "$OUT/gpu_suite.tgz" benchmarks/results benchmarks/NOTES.md -C "$OUT" $(cd "$OUT" && ls *.log *.txt 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/device.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
for step in $STEPS; do
  echo "=== $step ($(date +%T))"
  case $step in
    check)
      python -m pytest -q -m cuda tests 2>&1 | tail -25 | tee "$OUT/check.log"
      python -m pytest -q tests/test_fused_adam.py -k cuda 2>&1 | tail -3 | tee -a "$OUT/check.log"
      # fused LM head parity (bf16 too), fake-tensor memory benchmark vs max_memory_allocated, compiled step
      python benchmarks/gpu_check_lm_head.py 2>&1 | tee "$OUT/check_lm_head.log" ;;
    train)
      [ -d .gpu_carry ] || { echo "no .gpu_carry: skipped"; continue; }
      cfg=${TRAIN_ARGS:-"--backend auto --compile"}
      echo "--- train $cfg" | tee -a "$OUT/train.log"
      python -m gpt1_fast.train --data_dir .gpu_carry/data --cache_dir .gpu_carry/cache \
        --encoder_path .gpu_carry/vocab/encoder_bpe_40000.json --bpe_path .gpu_carry/vocab/vocab_40000.bpe \
        --from_scratch --n_iter 2 --submit --analysis --desc gpu --log_dir /tmp/log --save_dir /tmp/save \
        --submission_dir /tmp/sub $cfg 2>&1 | tail -12 | tee -a "$OUT/train.log" ;;
    *) python -m benchmarks "$step" 2>&1 | tee "$OUT/bench_$step.log" | tail -45 ;;
  esac
  save
done
