"""Warmup checkpoints in the Hugging Face Trainer layout, and the optimizer state LESS's Adam features need.

A checkpoint is a directory ``<run>/checkpoint-<global_step>/`` holding

- ``adapter_model.safetensors`` + ``adapter_config.json``: the LoRA adapter (peft ``save_pretrained``);
- ``optimizer.pt``: ``torch.save(optimizer.state_dict())``, integer-keyed (what the HF Trainer writes), or,
  from FSDP / accelerate runs such as LESS's own scripts, ``optimizer.bin`` whose state is keyed by
  parameter name (its ``param_groups`` may still list integer ids; the names decide);
- ``scheduler.pt``: the LR scheduler's state;
- ``trainer_state.json``: ``global_step``, ``epoch`` and ``log_history`` (one entry per logged step with
  ``step``, ``epoch``, ``learning_rate``, ``loss``), the fields the HF Trainer writes.

Nothing here unpickles arbitrary objects: weights are safetensors, optimizer state is read with
``torch.load(..., weights_only=True)``. The mapping from optimizer slots to LoRA parameters is checked
shape by shape, so a checkpoint trained with other LoRA targets or rank fails loudly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from inflow.errors import CheckpointError

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_PT = "optimizer.pt"
OPTIMIZER_BIN = "optimizer.bin"
SCHEDULER_PT = "scheduler.pt"
ADAPTER_CONFIG = "adapter_config.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Name segments that wrappers insert and that say nothing about which parameter it is.
_WRAPPERS = {"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"}
_TOLERANCE = 1e-6  # epochs are logged as rounded floats


@dataclass(frozen=True)
class AdamState:
    """AdamW moments of the LoRA parameters at a checkpoint, flattened in ``lora_parameters`` order.

    ``exp_avg`` (m) and ``exp_avg_sq`` (v) are ``[D]`` on CPU in the stored dtype; ``step`` is the
    optimizer's step count; ``beta1``, ``beta2``, ``eps``, ``lr`` come from its param groups.
    """

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int
    beta1: float
    beta2: float
    eps: float
    lr: float
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (param group 0)


def save_trainer_checkpoint(
    out_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    global_step: int,
    epoch: float,
    log_history: list[dict],
    extra_state: dict | None = None,
) -> Path:
    """Write a HF-Trainer-layout checkpoint at ``out_dir`` and return it.

    ``model`` must be a peft model (only the adapter is saved). ``scheduler`` may be None (no
    ``scheduler.pt``). ``extra_state`` keys are added to ``trainer_state.json``. Files are written into a
    temporary sibling directory that is then renamed, so a ``checkpoint-*`` directory that exists is
    complete; an existing ``out_dir`` is replaced.
    """
    if not isinstance(model, PeftModel):
        raise TypeError(f"save_trainer_checkpoint saves a LoRA adapter; got {type(model).__name__}, "
                        "wrap the model with peft (inflow.models.loading.apply_lora) first")
    extra = dict(extra_state or {})
    clash = sorted(set(extra) & {"global_step", "epoch", "log_history"})
    if clash:
        raise ValueError(f"extra_state must not override {clash}; pass them as arguments")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        model.save_pretrained(str(tmp))
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_PT)
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / SCHEDULER_PT)
        state = {"global_step": int(global_step), "epoch": float(epoch), "log_history": list(log_history),
                 "best_metric": None, "best_model_checkpoint": None, "is_hyper_param_search": False,
                 "is_local_process_zero": True, "is_world_process_zero": True, "total_flos": 0,
                 "trial_name": None, "trial_params": None, **extra}
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2))
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved checkpoint %s (step %d, epoch %.3g)", out_dir, global_step, epoch)
    return out_dir


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an old ``dst`` is moved aside first and deleted after."""
    old = dst.parent / f".{dst.name}.old-{os.getpid()}"
    if dst.exists():
        log.warning("replacing existing checkpoint %s", dst)
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoints(run_dir: str | Path) -> list[Path]:
    """The ``checkpoint-<step>`` directories of a training run, sorted by step (oldest first)."""
    run_dir = Path(run_dir)
    found = [(int(m.group(1)), p) for p in (run_dir.iterdir() if run_dir.is_dir() else [])
             if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint-<step> directories; run the warmup stage "
                              "(dvc repro warmup) or point features.warmup_dir at a run that has them")
    return [path for _, path in sorted(found)]


def read_trainer_state(ckpt_dir: str | Path) -> dict:
    """The parsed ``trainer_state.json`` of a checkpoint (needs ``epoch`` and ``log_history``)."""
    path = Path(ckpt_dir) / TRAINER_STATE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete or not in the Hugging Face "
                              "Trainer layout: point at a checkpoint-<step> directory written by the Trainer")
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error}); the checkpoint is damaged, recreate it") from error
    missing = [key for key in ("epoch", "log_history") if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}; it is not a Hugging Face Trainer state file")
    return state


def checkpoint_mean_lr(ckpt_dir: str | Path) -> float:
    """Mean logged learning rate over the epoch that ends at this checkpoint (LESS's checkpoint weight).

    With E the checkpoint's ``epoch`` and E0 = ceil(E) − 1 the start of that epoch, the mean of
    ``learning_rate`` over ``log_history`` entries with E0 < epoch ≤ E (entries without a learning rate,
    such as evaluation logs, are skipped). LESS normalises these to sum 1 over checkpoints.
    """
    state = read_trainer_state(ckpt_dir)
    end = float(state["epoch"])
    start = math.ceil(end - _TOLERANCE) - 1
    rates = [float(entry["learning_rate"]) for entry in state["log_history"]
             if "learning_rate" in entry and "epoch" in entry
             and start + _TOLERANCE < float(entry["epoch"]) <= end + _TOLERANCE]
    if not rates:
        raise CheckpointError(f"{ckpt_dir}: trainer_state.json logs no learning_rate between epoch {start} and "
                              f"{end}; train with logging every few steps (HF Trainer: logging_steps) so the "
                              "checkpoint weight can be computed")
    return sum(rates) / len(rates)


def load_adapter_into(model_base: torch.nn.Module, ckpt_dir: str | Path) -> PeftModel:
    """``PeftModel.from_pretrained(model_base, ckpt_dir, is_trainable=True)``: LoRA weights require grad.

    peft injects the adapter into ``model_base`` in place: load a fresh base model per checkpoint.
    """
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / ADAPTER_CONFIG).is_file():
        raise CheckpointError(f"{ckpt_dir}: no {ADAPTER_CONFIG}; point at a checkpoint holding a peft LoRA "
                              "adapter (save_pretrained of a PeftModel)")
    return PeftModel.from_pretrained(model_base, str(ckpt_dir), is_trainable=True)


def load_adam_state(ckpt_dir: str | Path, params: list[tuple[str, torch.Size]]) -> AdamState:
    """The AdamW moments of ``params`` (the LoRA parameters' ``(name, shape)`` in ``lora_parameters`` order).

    Two layouts, told apart by the keys of ``state`` (see :func:`_state_keys`): integer-keyed state
    (``optimizer.pt``, HF Trainer), where slot k of ``param_groups`` (groups concatenated in order) is
    ``params[k]``; and name-keyed state (``optimizer.bin`` from FSDP / accelerate, what LESS's
    ``get_info`` reads), whose ``param_groups`` may list names or integer ids: each parameter is matched by
    name, ignoring wrapper prefixes (``base_model.model.``, ``_fsdp_wrapped_module.``, ``module.``) and the
    adapter name (``.default``). Every slot's ``exp_avg``/``exp_avg_sq`` must have its parameter's shape.
    Returns m, v flattened to ``[D]`` = concatenation over ``params``.
    """
    ckpt_dir = Path(ckpt_dir)
    raw, source = _read_optimizer(ckpt_dir)
    state, groups = raw.get("state"), raw.get("param_groups")
    if not isinstance(state, dict) or not isinstance(groups, list) or not groups:
        raise CheckpointError(f"{source}: not an optimizer state_dict (needs 'state' and 'param_groups'); "
                              "save it with torch.save(optimizer.state_dict())")
    keys = _state_keys(state, groups, params, source)
    moments: dict[str, list[torch.Tensor]] = {"exp_avg": [], "exp_avg_sq": []}
    steps = []
    for (name, shape), key in zip(params, keys, strict=True):
        slot = state.get(key)
        if not isinstance(slot, dict) or "exp_avg" not in slot or "exp_avg_sq" not in slot:
            raise CheckpointError(f"{source}: no AdamW state (exp_avg, exp_avg_sq) for {name} (slot {key!r}); "
                                  "the optimizer never stepped or is not Adam: save checkpoints after training "
                                  "steps with AdamW")
        for moment, values in moments.items():
            if tuple(slot[moment].shape) != tuple(shape):
                raise CheckpointError(
                    f"{source}: {moment} of {name} (slot {key!r}) has shape {tuple(slot[moment].shape)}, the "
                    f"parameter has shape {tuple(shape)}; the checkpoint was trained with LoRA targets/rank "
                    "different from params.yaml warmup.lora: set warmup.lora to the settings it was trained with")
            values.append(slot[moment].reshape(-1))
        steps.append(int(torch.as_tensor(slot.get("step", 0)).item()))
    beta1, beta2, eps, lr = _hyper_parameters(groups, source)
    return AdamState(exp_avg=torch.cat(moments["exp_avg"]), exp_avg_sq=torch.cat(moments["exp_avg_sq"]),
                     step=max(steps), beta1=beta1, beta2=beta2, eps=eps, lr=lr,
                     weight_decay=float(groups[0].get("weight_decay", 0.0)))


def _state_keys(state: dict, groups: list[dict], params: list[tuple[str, torch.Size]], source: Path) -> list:
    """The key of ``state`` that holds each parameter's moments, in ``params`` order.

    Name-keyed ``state``: matched by name, whatever ``param_groups`` lists (FSDP full state dicts list names;
    LESS's ``optimizer.bin`` lists integer ids, which it ignores, as we do). Integer-keyed ``state``: the
    parameter ids of ``param_groups`` in order, the k-th for ``params[k]``.
    """
    named = [key for key in state if isinstance(key, str)]
    if named and len(named) != len(state):
        raise CheckpointError(f"{source}: the optimizer state mixes parameter names and integer ids as keys; "
                              "save it again with torch.save(optimizer.state_dict()) (integer ids) or as a full "
                              "name-keyed FSDP optimizer state dict")
    if named:
        _check_count(len(state), len(params), source)
        return _match_names(named, params, source)
    slots = [key for group in groups for key in group.get("params", [])]
    if any(not isinstance(slot, int) for slot in slots):
        raise CheckpointError(f"{source}: param_groups list parameter names but the state is keyed by integer "
                              "ids, so slots cannot be matched; save the optimizer with "
                              "torch.save(optimizer.state_dict())")
    _check_count(len(slots), len(params), source)
    return slots


def _check_count(n_slots: int, n_params: int, source: Path) -> None:
    if n_slots != n_params:
        raise CheckpointError(f"{source}: the optimizer holds {n_slots} parameters but the model has "
                              f"{n_params} LoRA parameters; the checkpoint was trained with LoRA targets "
                              "different from params.yaml warmup.lora: use the same target_modules")


def _read_optimizer(ckpt_dir: Path) -> tuple[dict, Path]:
    """Load ``optimizer.pt`` (preferred) or ``optimizer.bin`` on CPU with ``weights_only=True``."""
    for name in (OPTIMIZER_PT, OPTIMIZER_BIN):
        path = ckpt_dir / name
        if path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True), path
            except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
                raise CheckpointError(f"{path}: cannot be read as a plain optimizer state_dict ({error}); "
                                      "re-save it with torch.save(optimizer.state_dict())") from error
    raise CheckpointError(f"{ckpt_dir}: no {OPTIMIZER_PT} or {OPTIMIZER_BIN}; Adam features need the optimizer "
                          "state: save checkpoints with it (HF Trainer: save_only_model=False; FSDP: a full, "
                          "not sharded, optimizer state dict)")


def _canonical(name: str) -> str:
    """A parameter name without wrapper segments or the adapter name: ``model.layers.0...lora_A.weight``."""
    parts = [part for part in name.split(".") if part not in _WRAPPERS]
    while parts[:1] == ["module"]:
        parts = parts[1:]
    while parts[:2] == ["base_model", "model"]:
        parts = parts[2:]
    out = []
    for i, part in enumerate(parts):
        # ``lora_A.<adapter>.weight``: the segment after lora_A/lora_B is the adapter name.
        if i >= 1 and parts[i - 1] in ("lora_A", "lora_B") and i + 1 < len(parts):
            continue
        out.append(part)
    return ".".join(out)


def _match_names(slots: list, params: list[tuple[str, torch.Size]], source: Path) -> list[str]:
    """For each parameter, the one name-keyed slot whose canonical name equals it or ends with it."""
    canonical = {_canonical(str(slot)): slot for slot in slots}
    keys = []
    for name, _ in params:
        want = _canonical(name)
        if want in canonical:
            keys.append(canonical[want])
            continue
        hits = [slot for c, slot in canonical.items() if c.endswith("." + want) or want.endswith("." + c)]
        if len(hits) != 1:
            what = "no optimizer entry" if not hits else f"several optimizer entries {hits[:3]}"
            raise CheckpointError(f"{source}: {what} match the LoRA parameter {name}; the checkpoint was trained "
                                  "with LoRA targets different from params.yaml warmup.lora, or another model: "
                                  "use the checkpoint's own base model and target_modules")
        keys.append(hits[0])
    if len(set(keys)) != len(keys):
        raise CheckpointError(f"{source}: two LoRA parameters match the same optimizer entry; parameter names "
                              "are ambiguous after removing wrapper prefixes, save an integer-keyed optimizer.pt")
    return keys


def _hyper_parameters(groups: list[dict], source: Path) -> tuple[float, float, float, float]:
    """``(beta1, beta2, eps, lr)``, the same in every param group (Adam features use one set)."""
    found = set()
    for group in groups:
        if "betas" not in group or "eps" not in group:
            raise CheckpointError(f"{source}: param group without betas/eps; the optimizer is not Adam/AdamW, "
                                  "which LESS's Adam features need")
        found.add((float(group["betas"][0]), float(group["betas"][1]), float(group["eps"])))
    if len(found) != 1:
        raise CheckpointError(f"{source}: param groups disagree on Adam betas/eps {sorted(found)}; "
                              "train the adapter with one setting")
    beta1, beta2, eps = found.pop()
    return beta1, beta2, eps, float(groups[0].get("lr", 0.0))
