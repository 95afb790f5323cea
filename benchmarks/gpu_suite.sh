#!/usr/bin/env bash
# Everything that needs the GPU, in one call (device time is scarce):
#   GPT1_FAST_COMMIT=<git rev-parse HEAD> bash benchmarks/gpu_suite.sh [STEP ...]
# (the device's copy of the tree has no .git: the commit recorded in results comes from that variable)
# STEPs: check train adam layernorm_gelu attention lm_head train_step pretrain (default: all, in that order).
# Results land in benchmarks/results/; after every step, results and logs are archived to
# $OUT/gpu_suite.tgz (the device tool returns at most 8 files), so a timeout loses only the last step.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
STEPS=${*:-check train adam layernorm_gelu attention lm_head train_step pretrain}
save() { tar czf "$OUT/gpu_suite.tgz" benchmarks/results benchmarks/NOTES.md -C "$OUT" $(cd "$OUT" && ls *.log *.txt 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/device.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
for step in $STEPS; do
  echo "=== $step ($(date +%T))"
  case $step in
    check)  # whole model: triton backend vs the reference, fp32/bf16, fullgraph compile; extension CUDA tests
      python benchmarks/gpu_check_model.py 2>&1 | tee "$OUT/check_model.log"
      python -m pytest -q -x tests/test_fused_adam.py -k cuda 2>&1 | tail -3 | tee -a "$OUT/check_model.log"
      # fused LM head parity (bf16 too), fake-tensor memory benchmark vs max_memory_allocated, compiled step
      python benchmarks/gpu_check_lm_head.py 2>&1 | tee "$OUT/check_lm_head.log" ;;
    train)  # the user's command end to end, full GPT-1 size from scratch (no weights here), on synthetic
            # Story Cloze files encoded beforehand with the real vocabulary (.gpu_carry: data/, vocab/,
            # cache/; this machine has no spaCy, and the encoded cache makes it unnecessary).
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
