"""Per-example losses of a batch, with the LM head computed on answer tokens only.

- :func:`example_losses` is the one loss every module uses: the mean next-token cross-entropy over an
  example's answer tokens, from full logits ``[B, T, V]``.
- :func:`scored_losses` computes the same losses from a model without full logits: the decoder's hidden states
  ``[B, T, h]`` are gathered at the N scored positions (``labels[b, t + 1] != -100``) and only those ``[N, h]``
  rows go through the LM head, in chunks of at most ``HEAD_CHUNK_BYTES`` of logits, each recomputed in the backward
  (``torch.utils.checkpoint``), so no ``[B, T, V]`` (nor ``[N, V]``) float32 tensor is ever held. For a 128k
  vocabulary that is the largest activation of a small model's gradient pass.

Bits: a matrix row of the LM head's product gets the same bits whatever the batch only when the product has enough
rows (MKL computes products of 1-2 rows with other kernels, so a row with one answer token got other bits alone
than next to other rows): every head product is padded to at least :data:`MIN_PRODUCT_ROWS` rows.

Models whose logits are exactly ``lm_head(decoder(x))`` (:data:`PLAIN_HEAD_MODELS`) take the gathered path; others
(softcapped or scaled logits, LoRA on the head) fall back to transformers' ``logits_to_keep`` at the union of the
batch's answer positions, also padded, or to full logits.

Causal only (``causal_only``): rows are right-padded, so under causal attention a real position never attends to
a padded one, and the padding mask changes nothing at the positions a loss reads (padded positions only feed later
padded positions, whose outputs no loss reads, so their gradients are exactly zero). Without the mask, SDPA takes
its causal kernel (flash attention on a GPU: the masked half of the score matrix is skipped) rather than a kernel
for an arbitrary mask, which computes all ``T x T`` scores. Only the gathered path drops it (the models of
:data:`PLAIN_HEAD_MODELS`, whose positions are ``0..T-1`` whatever the mask); the others keep the mask.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from inflow.devices import MIN_PRODUCT_ROWS, pad_rows
from inflow.profiling import region

IGNORE = -100
HEAD_CHUNK_BYTES = 256 << 20  # float32 logits per chunk of the LM head
# model types whose causal LM computes logits = lm_head(model(x).last_hidden_state), nothing more
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo", "olmo2"})


def example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example loss ``[B]``: mean over answer tokens of the next-token cross-entropy.

    ``logits [B, T, V]`` are shifted against ``labels [B, T]`` (``-100`` = not an answer token):
    loss_b = (1 / |A_b|) * sum_{t in A_b} CE(logits[b, t-1], labels[b, t]), A_b = {t >= 1 : labels[b, t] != -100}.
    Computed in float32 at least (float64 logits stay float64). Differentiable.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"logits must be [B, T, V] and labels [B, T]; got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    return aligned_losses(logits[:, :-1], labels[:, 1:])


def aligned_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example loss ``[B]`` from logits already aligned with the tokens they predict.

    ``logits [B, P, V]``, ``targets [B, P]`` (``-100``: not scored): loss_b = mean over scored p of
    CE(logits[b, p], targets[b, p]). :func:`example_losses` is this on ``logits[:, :-1]``, ``labels[:, 1:]``.
    """
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    counts = (targets != IGNORE).sum(dim=1)
    _check_counts(counts)
    token_losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=IGNORE, reduction="none").view(targets.shape)
    return token_losses.sum(dim=1) / counts.to(token_losses.dtype)


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions ``t`` [P] whose logits predict an answer token in some row: ``labels[b, t + 1] != -100``.

    Only these logits enter a loss, so the LM head (``[h, V]``, the largest matmul of a small model, 2-4 GB of
    float32 logits per batch for a 128k vocabulary) runs on them alone.
    """
    return torch.nonzero((labels[:, 1:] != IGNORE).any(dim=0)).flatten()


def keeps_logits(model: torch.nn.Module) -> bool:
    """Whether the (base) model's forward takes ``logits_to_keep`` (transformers' causal LMs do)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def scored_losses(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  labels: torch.Tensor, *, recompute: bool = True, causal_only: bool = False) -> torch.Tensor:
    """Per-example losses ``[B]`` of a batch (as :func:`example_losses` on the model's full logits), differentiable.

    The LM head runs on the scored positions only (see the module docstring). ``recompute``: chunks of logits are
    recomputed in the backward instead of kept (set False where the graph is differentiated twice).
    ``causal_only``: run the decoder without the padding mask (right padding only; see the module docstring).
    """
    split = _plain_head(model)
    if split is None:
        return _kept_logits_losses(model, input_ids, attention_mask, labels)
    decoder, head = split
    mask = None if causal_only else attention_mask
    hidden = decoder(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
    rows, cols = torch.nonzero(labels[:, 1:] != IGNORE, as_tuple=True)  # row-major: a row's tokens in order
    counts = torch.bincount(rows, minlength=labels.shape[0])
    _check_counts(counts)
    with region("head"):
        token_losses = _head_losses(head, hidden[rows, cols], labels[rows, cols + 1], recompute)  # [N]
    sums = torch.zeros(labels.shape[0], dtype=token_losses.dtype, device=token_losses.device)
    sums = sums.index_put((rows,), token_losses, accumulate=True)  # sorted, no atomics on a GPU
    return sums / counts.to(sums.dtype)


def _plain_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """The (decoder, LM head) of a model whose logits are the head applied to the decoder's output, else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "model_type", None) not in PLAIN_HEAD_MODELS:
        return None
    decoder = getattr(base, "model", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or type(head) is not torch.nn.Linear:  # a LoRA-wrapped head must run through its hooks
        return None
    return decoder, head


def _head_losses(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor, recompute: bool) -> torch.Tensor:
    """Cross-entropy ``[N]`` of ``head(hidden [N, h])`` against ``targets [N]``, in chunks of rows."""
    chunk = max(MIN_PRODUCT_ROWS, HEAD_CHUNK_BYTES // (4 * head.out_features))
    pieces = []
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start:start + chunk], targets[start:start + chunk]
        if recompute and torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_losses, head, h, t, use_reentrant=False))
        else:
            pieces.append(_chunk_losses(head, h, t))
    return torch.cat(pieces)


def _chunk_losses(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one chunk, its head product padded to :data:`MIN_PRODUCT_ROWS` rows."""
    n = hidden.shape[0]
    logits = head(pad_rows(hidden, MIN_PRODUCT_ROWS))[:n]
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return F.cross_entropy(logits, targets, reduction="none")


def _kept_logits_losses(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    """The fallback: ``logits_to_keep`` at the batch's answer positions (padded so the head product has at least
    :data:`MIN_PRODUCT_ROWS` rows; the extra positions score nothing), or full logits."""
    if not keeps_logits(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return example_losses(logits, labels)
    keep = answer_positions(labels)
    batch, width = labels.shape
    targets = labels[:, keep + 1]
    need = -(-MIN_PRODUCT_ROWS // batch) - keep.numel()
    if need > 0:
        taken = set(keep.tolist())
        extra = torch.tensor([p for p in range(width) if p not in taken][:need], dtype=keep.dtype,
                             device=keep.device)
        keep = torch.cat([keep, extra])
        targets = torch.cat([targets, targets.new_full((batch, extra.numel()), IGNORE)], dim=1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits
    return aligned_losses(logits, targets)


def _check_counts(counts: torch.Tensor) -> None:
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"examples at batch rows {empty} have no answer token after the shift (every label "
                         "is -100, or only the first token is labelled): drop such examples before computing "
                         "losses (rendering drops examples whose answer was truncated away)")
