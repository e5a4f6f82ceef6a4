"""Selection cost: Influence Distillation (embed every row, exact gradients for L landmarks, propagate) against LESS
(an Adam gradient feature for every row, per checkpoint), measured side by side in one process on the same model
and rows.

Setup (not timed): a random-init Llama of the chosen size with LoRA on q/k/v/o (``_common.tiny_lora_model``), ``n``
synthetic rows, a constructed Adam state (m ~ N(0, 1e-6), v = m² + 1e-8, step 100) standing in for a warmup
checkpoint's.

Timed, each the code the stages run:

- ``less_s``: one checkpoint of LESS's features for all n rows: ``per_example_grads`` → ``adam_features`` →
  Rademacher sketch to 8192 (LESS repeats this at every checkpoint: 4 in the paper);
- ``embed_s``: JVP embeddings of all n rows (``jvp_embeddings`` over the first ``--embed-blocks`` blocks (default 4, capped by the layers), 2 tangents),
  then the sketch to 4096 where wider;
- ``landmarks_s``: ``per_example_grads`` → a ⊙ g → the same 8192 sketch for the L landmark rows;
- ``propagate_s``: kernel ridge fit on the landmarks (RBF, median bandwidth) and prediction for all n rows.

``speedup`` = less_s / (embed_s + landmarks_s + propagate_s): one LESS checkpoint against all of Influence
Distillation's selection work; ``speedup_4ckpt`` multiplies ``less_s`` by LESS's 4 checkpoints.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import DEFAULT_SIZE, QUICK_SIZE, apply_threads, machine, parser, result_line, synthetic_examples, \
    tiny_lora_model


def _batches(rows: list, batch_size: int) -> list[dict[str, torch.Tensor]]:
    from inflow.data.batching import collate, length_batches

    return [collate([rows[i] for i in b], 0) for b in length_batches([len(r) for r in rows], batch_size)]


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--embed-blocks", type=int, default=4, help="blocks the JVP runs through (capped by the model's "
                     "layers; the paper: 4 of 32)")
    args = cli.parse_args()
    apply_threads(args.threads)
    from inflow.gradients.blocks import lora_blocks
    from inflow.gradients.features import adam_features
    from inflow.gradients.per_example import per_example_grads
    from inflow.methods.distill import (adam_preconditioner, block_parameters, embedding_positions,
                                        fit_kernel_ridge, jvp_embeddings, tangent_directions)
    from inflow.sketch import BlockSketch

    size = QUICK_SIZE if args.quick else DEFAULT_SIZE
    n, landmarks, batch = (256, 32, 16) if args.quick else (1024, 128, 16)
    model = tiny_lora_model(size)
    rows = synthetic_examples(n, size.vocab, 48, 160, seed=0)
    batches = _batches(rows, batch)
    dim = sum(b.size for b in lora_blocks(model))
    generator = torch.Generator().manual_seed(0)
    m = torch.randn(dim, generator=generator) * 1e-3
    v = m.square() + 1e-8
    grad_sketch = BlockSketch("rademacher", 0, [b.size for b in lora_blocks(model)], 8192)
    blocks = min(args.embed_blocks, size.layers)
    tangents = tangent_directions(block_parameters(model, blocks), 2, seed=0)
    embed_sketch = BlockSketch("rademacher", 0, [2 * size.hidden], 4096)

    start = time.perf_counter()
    for b in batches:
        grads, _ = per_example_grads(model, b)
        grad_sketch.project(adam_features(grads, m, v, 0.9, 0.999, 1e-8))
    less_s = time.perf_counter() - start

    start = time.perf_counter()
    embedded = []
    for b in batches:
        positions = embedding_positions(b["labels"], b["attention_mask"])
        embedded.append(embed_sketch.project(jvp_embeddings(model, b["input_ids"], b["attention_mask"], positions,
                                                            tangents, blocks)))
    embeddings = torch.cat(embedded).double()
    embed_s = time.perf_counter() - start

    picked = np.sort(np.random.default_rng(0).choice(n, size=landmarks, replace=False))
    start = time.perf_counter()
    a = adam_preconditioner(v, 100, 0.9, 0.999, 1e-8)
    features = torch.cat([grad_sketch.project(per_example_grads(model, b)[0] * a)
                          for b in _batches([rows[i] for i in picked], batch)])
    landmarks_s = time.perf_counter() - start

    target = torch.randn(8, features.shape[1], generator=generator).double()
    start = time.perf_counter()
    ridge = fit_kernel_ridge(embeddings[picked], features.double() @ target.T, 1e-3, "rbf")
    predicted = torch.cat([ridge.predict(embeddings[i:i + 4096]) for i in range(0, n, 4096)])
    propagate_s = time.perf_counter() - start
    assert predicted.shape == (n, 8)

    distill_s = embed_s + landmarks_s + propagate_s
    print(result_line({"size": "quick" if args.quick else "default", "rows": n, "landmarks": landmarks,
                       "embed_blocks": blocks, "layers": size.layers,
                       "machine": machine(), "less_s": less_s, "embed_s": embed_s, "landmarks_s": landmarks_s,
                       "propagate_s": propagate_s, "distill_s": distill_s, "speedup": less_s / distill_s,
                       "speedup_4ckpt": 4 * less_s / distill_s}))


if __name__ == "__main__":
    main()
