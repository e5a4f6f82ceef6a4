#!/usr/bin/env bash
# The GPU checks of issue 20 as one prepared script, for a session lent a GPU machine (device tool `run`).
# The image has torch, transformers and peft, not zarr or polars: carry their wheels as the device README says
# (`.whl/`, python 3.12 manylinux x86-64: zarr, numcodecs, donfig, crc32c, polars, polars-runtime-32, pyarrow if
# needed) and start the command with its `pip install --target <a temporary dir>` line. Figures go to $OUT
# (set by the device tool; a fresh temporary directory otherwise), then into docs/benchmarks.md.
set -uo pipefail
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-$(mktemp -d)}"; mkdir -p "$OUT"; echo "figures in $OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
# 1. CUDA tests: the fused kernel against the CPU path (float32 and bfloat16), device invariance of the sketches
python3 -m pytest -q tests/sketch/test_rademacher_triton.py tests/sketch/test_sketch_invariance.py 2>&1 | tee "$OUT/tests.txt"
# 2. the sketch alone: torch path vs fused kernel, IEEE fp32 and TF32
python3 benchmarks/sketch.py --device cuda 2>&1 | tee "$OUT/sketch.txt"
python3 benchmarks/sketch.py --device cuda --tf32 2>&1 | tee -a "$OUT/sketch.txt"
python3 benchmarks/sketch.py --device cuda --sweep --repeats 2 2>&1 | tee "$OUT/sketch_sweep.txt"
# 3. extraction, 1B shape, 128-512 tokens: eager vs sdpa, the table rows
for att in eager sdpa; do
  python3 benchmarks/extract.py --device cuda --precision bfloat16 --size 1b --min-len 128 --max-len 512 \
    --attention "$att" --repeats 2 2>&1 | tail -3 | tee -a "$OUT/extract_1b.txt"
done
# 4. extraction, 7B shape (Llama-2-7B, LoRA r 8 on q,k,v,o), 2048-token rows: does it fit, at what fraction of peak
python3 benchmarks/extract.py --device cuda --precision bfloat16 --size 7b --min-len 2048 --max-len 2048 \
  --examples 32 --batch-size 4 --attention sdpa --repeats 1 2>&1 | tail -3 | tee "$OUT/extract_7b.txt"
# 5. the features stage's own path at its defaults (features.device: auto): token batches, precision auto, SDPA,
#    fused sketch; every sketch kind at 1B (the sketch's share is the difference between kinds), then 7B at 2048
for kind in rademacher sparse_jl hadamard; do
  python3 benchmarks/extract.py --defaults --device cuda --size 1b --min-len 128 --max-len 512 --kind "$kind" \
    --repeats 2 2>&1 | tail -3 | tee -a "$OUT/defaults_1b.txt"
done
python3 benchmarks/extract.py --defaults --device cuda --size 7b --min-len 2048 --max-len 2048 --examples 32 \
  --repeats 1 2>&1 | tail -3 | tee "$OUT/defaults_7b.txt"
# 6. memory per token with activation checkpointing (features.gradient_checkpointing), 7B at 2048 tokens
python3 benchmarks/extract.py --defaults --device cuda --size 7b --min-len 2048 --max-len 2048 --examples 32 \
  --gradient-checkpointing --repeats 1 2>&1 | tail -3 | tee -a "$OUT/defaults_7b.txt"
