#!/usr/bin/env bash
# The GPU checks of issue 20 as one prepared script, sized for one device-tool call (a command runs at most 10
# minutes, a session has 15 minutes of device time in all, the machine's start included).
#
# The image has torch, transformers and peft, not zarr or polars. Once, here, in the repo's root:
#   echo /.whl/ >> .git/info/exclude
#   for p in zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 polars==2.1.0 \
#            polars-runtime-32==2.1.0; do python3 -m pip download -q --no-deps --only-binary=:all: \
#     --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl "$p"; done                              # 62 MB, under the 64 MiB
# then the device tool's `run` with carry [".whl"], timeout_s 600 and the command
#   S=$(mktemp -d) && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target "$S" .whl/*.whl && export PYTHONPATH="$S" || exit; bash benchmarks/gpu_checks.sh
#
# Steps run in order of what the issue needs most (the CUDA tests, the defaults' figures at 1B for every sketch
# kind, 7B at 2048 tokens with and without checkpointing, the kernel's tile sweep, 7B with the padding mask, then
# the issue's own table rows), each under `timeout` with at most its cap and what is left of GPU_CHECKS_BUDGET_S
# (default 560 s); a step that would get less than its minimum is skipped, and $OUT/steps.txt says so.
# GPU_CHECKS_STEPS (names, space separated) runs only those steps: a second call for what the first skipped, sent
# at once (the machine stays warm 30 s after a call; none starts with under 4 minutes of device time left), with
# GPU_CHECKS_BUDGET_S set to what is left.
# GPU_CHECKS_DRY=1 runs every step on the CPU at the quick size in about a minute: it checks this script's
# plumbing here (tests/benchmarks/test_gpu_checks.py), no figures.
# Figures go to $OUT (set by the device tool; a fresh temporary directory otherwise), then into docs/benchmarks.md,
# in at most 8 files (what the device tool brings back): tests, defaults, breakdown, sketch, standard, steps, summary.
set -uo pipefail
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-$(mktemp -d)}"; mkdir -p "$OUT"; echo "figures in $OUT"
BUDGET="${GPU_CHECKS_BUDGET_S:-560}"
ONLY=" ${GPU_CHECKS_STEPS:-} "
PY="${PYTHON:-python3}"
if [[ "${GPU_CHECKS_DRY:-0}" == 1 ]]; then  # the CPU at the quick size: every step's command line, no figures
  DEV=cpu; S1B=(--quick --examples 16); S7B=(--quick --examples 8 --min-len 100 --max-len 100); REP=1
  SK=(--quick); SK1B=(--quick --blocks 4); SWEEP=(--quick --blocks 4); DET=(--rows 4 --tokens 96)
else
  DEV=cuda; S1B=(--size 1b --min-len 128 --max-len 512); S7B=(--size 7b --min-len 2048 --max-len 2048 --examples 32)
  # the sketch's calls in the features stage: one per layer (block) of a group of 1/64 of the GPU's memory, 1B
  # (16 blocks of 106,496, ~320 rows) and 7B (32 blocks of 262,144, 64 rows) to 8,192 dims in all
  REP=2; SK=(); SK1B=(--rows 320 --in-dim 1703936 --blocks 16); DET=()
  SWEEP=(--repeats 2 --rows 64 --in-dim 8388608 --blocks 32)

fi
START=$SECONDS

step() {  # NAME CAP_S MIN_S FILE COMMAND...: run COMMAND under the budget, its output appended to $OUT/FILE
  local name=$1 cap=$2 min=$3 file=$4; shift 4
  if [[ "$ONLY" != "  " && "$ONLY" != *" $name "* ]]; then return; fi
  local left=$((BUDGET - (SECONDS - START)))
  if ((left < min)); then echo "$name: skipped, $left s left of $BUDGET" | tee -a "$OUT/steps.txt"; return; fi
  local limit=$((cap < left ? cap : left)) t0=$SECONDS
  echo "== $name (limit $limit s): $*" | tee -a "$OUT/$file"
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$OUT/$file"
  echo "$name: rc ${PIPESTATUS[0]} in $((SECONDS - t0)) s (limit $limit)" | tee -a "$OUT/steps.txt"
}

step env 30 5 tests.txt bash -c "nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1; $PY -c \
'import torch, transformers, peft; print(torch.__version__, torch.version.cuda, transformers.__version__, \
peft.__version__); import triton; print(\"triton\", triton.__version__)'"
# 1. CUDA tests: the fused kernel against the CPU path (fp32, bf16), the sketches' device invariance, sparse JL run to
#    run, training on a GPU, the features stage on CUDA (vs the CPU, bf16 directions, run to run, checkpointing)
step tests 150 60 tests.txt "$PY" -m pytest -q -p no:cacheprovider --basetemp "$(mktemp -d)/bt" \
  tests/sketch/test_rademacher_triton.py tests/sketch/test_sketch_invariance.py tests/sketch/test_sketch_jl.py \
  tests/pipeline/test_features_cuda.py tests/training/test_loop.py -k "cuda or gpu or triton or fused"
# do per-example gradients repeat bit for bit? (SDPA's fused backward may add with atomics; default vs deterministic)
step determinism 90 15 tests.txt "$PY" benchmarks/determinism.py --device "$DEV" "${DET[@]}"
# 2. the features stage's own path at its defaults (features.device: auto: token batches, precision auto, SDPA,
#    fused sketch), 1B shape, 128-512 tokens: every sketch kind (the sketch's share is the difference between kinds)
step defaults_1b_rademacher 150 45 defaults.txt "$PY" benchmarks/extract.py --defaults --device "$DEV" "${S1B[@]}" \
  --kind rademacher --repeats "$REP"
#    where that time goes, by phase and kind of operator, and how busy the GPU is (a torch.profiler profile)
step breakdown_1b 100 40 breakdown.txt "$PY" benchmarks/breakdown.py --device "$DEV" "${S1B[@]}" --examples 64
#    the same with compiled decoder layers (features.compile: fused elementwise passes; the warm-up compiles): should
#    compile become the GPU default? (--no-loop here and below: the LESS-style loop, timed once per shape above,
#    depends on neither the sketch kind nor compiling, and its passes are most of a step's time)
step defaults_1b_compile 150 60 defaults.txt "$PY" benchmarks/extract.py --defaults --device "$DEV" "${S1B[@]}" \
  --kind rademacher --repeats "$REP" --compile --no-loop
step breakdown_1b_compile 150 60 breakdown.txt "$PY" benchmarks/breakdown.py --device "$DEV" "${S1B[@]}" \
  --examples 64 --compile
for kind in sparse_jl hadamard; do
  step "defaults_1b_$kind" 90 30 defaults.txt "$PY" benchmarks/extract.py --defaults --device "$DEV" "${S1B[@]}" \
    --kind "$kind" --repeats "$REP" --no-loop
done
# 3. 7B shape (Llama-2-7B, LoRA r 8 on q,k,v,o), 2048-token rows: fits? fraction of peak, memory per token, then
#    with activation checkpointing (features.gradient_checkpointing)
step defaults_7b 170 70 defaults.txt "$PY" benchmarks/extract.py --defaults --device "$DEV" "${S7B[@]}" --repeats 1
step defaults_7b_checkpointing 120 50 defaults.txt "$PY" benchmarks/extract.py --defaults --device "$DEV" \
  "${S7B[@]}" --repeats 1 --gradient-checkpointing --no-loop
# 4. the sketch alone: torch path vs fused kernel, TF32 products (what bf16 extraction uses) and IEEE fp32 on one
#    wide call, then TF32 on a 1B group's calls (one per block: few programs each), then the tile sweep of the
#    TF32 kernel on a 7B group's calls (which tiles are fastest where a call has the fewest programs; which keep
#    the bits)
step sketch 90 30 sketch.txt bash -c "$PY benchmarks/sketch.py --device $DEV --tf32 ${SK[*]} && \
  $PY benchmarks/sketch.py --device $DEV ${SK[*]} && $PY benchmarks/sketch.py --device $DEV --tf32 ${SK1B[*]}"
step sweep 120 40 sketch.txt "$PY" benchmarks/sketch.py --device "$DEV" --sweep --tf32 "${SWEEP[@]}"
# 5. what dropping the padding mask on a GPU gains (SDPA's causal flash kernel vs its masked kernel), 7B at 2048
step defaults_7b_masked 120 50 defaults.txt "$PY" benchmarks/extract.py --defaults --device "$DEV" "${S7B[@]}" \
  --repeats 1 --padding-mask --no-loop
# 6. the table rows (standard mode: rows per batch, eager vs SDPA) for comparison with b30bd0b
for att in eager sdpa; do
  step "standard_1b_$att" 120 45 standard.txt "$PY" benchmarks/extract.py --device "$DEV" \
    --precision "$([[ $DEV == cuda ]] && echo bfloat16 || echo float32)" "${S1B[@]}" --attention "$att" --repeats "$REP"
done
# the figures the issue asks for, one line per --defaults run (the whole lines are in defaults.txt)
grep -h "defaults=true" "$OUT/defaults.txt" 2>/dev/null | awk '{
  for (i = 1; i <= NF; i++) { n = index($i, "="); v[substr($i, 1, n - 1)] = substr($i, n + 1) }
  print "size=" v["size"], "kind=" v["sketch_kind"], "checkpointing=" v["gradient_checkpointing"],
        "padding_mask=" v["padding_mask"], "compiled=" v["compiled"], "fraction_of_peak=" v["fraction_of_peak"],
        "x_less_loop=" v["speedup_vs_less_loop"], "tok_per_s=" v["ours_tok_per_s"], "batch_tokens=" v["batch_tokens"],
        "mib_per_token=" v["gpu_mib_per_token"], "peak_gib=" v["gpu_peak_mem_gib"]; delete v }' | tee "$OUT/summary.txt"
echo "done in $((SECONDS - START)) s of $BUDGET" | tee -a "$OUT/steps.txt"
