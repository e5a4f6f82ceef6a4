"""Loading models the one way: ``AutoModelForCausalLM.from_pretrained(path)``, plus LoRA wrapping.

A model directory may also hold a ``model_ref.json`` written by the ``base`` stage when the user brings
their own checkpoint (``build: false``): it points at that checkpoint, so DVC tracks a small file while
the weights stay where the user keeps them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, PreTrainedModel

from inflow.config import LoraConfig
from inflow.errors import InflowError

MODEL_REF = "model_ref.json"


def resolve_model_dir(path: str | Path) -> Path:
    """The directory that actually holds the checkpoint (follows a ``model_ref.json``)."""
    path = Path(path)
    ref = path / MODEL_REF
    if ref.exists():
        return Path(json.loads(ref.read_text())["path"])
    return path


def write_model_ref(stage_dir: str | Path, model_path: str | Path) -> Path:
    """Record that ``stage_dir`` stands for the user's checkpoint at ``model_path``."""
    model_path = Path(model_path)
    if not (model_path / "config.json").exists():
        raise InflowError(f"{model_path}: no config.json; point selector.path / target.path at a Hugging Face "
                          "checkpoint directory (one that from_pretrained can load)")
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    ref = stage_dir / MODEL_REF
    ref.write_text(json.dumps({"path": str(model_path.resolve()), "fingerprint": model_fingerprint(model_path)},
                              indent=2))
    return ref


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32,
                   attn_implementation: str = "sdpa") -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` on the resolved directory, weights in ``dtype``, on the CPU.

    ``attn_implementation`` defaults to ``"sdpa"`` (torch's fused attention: faster, less memory, and in float64
    exact, unlike HF's eager attention whose softmax runs in float32). Pass ``"eager"`` where the attention must be
    plain torch ops (forward-mode AD through it).
    """
    model_dir = resolve_model_dir(path)
    if not (model_dir / "config.json").exists():
        raise InflowError(f"{model_dir}: not a model checkpoint (no config.json); run the base stage "
                          "(dvc repro base) or set the model path in params.yaml")
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn_implementation)


def apply_lora(model: PreTrainedModel, cfg: LoraConfig) -> PeftModel:
    """Wrap ``model`` with fresh LoRA adapters on ``cfg.target_modules``; only LoRA weights train.

    The adapters are float32 whatever the base weights' dtype (peft's ``autocast_adapter_dtype``), so a bfloat16
    base trains float32 LoRA weights and AdamW state under autocast.
    """
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise InflowError(f"LoRA target modules {missing} do not exist in {type(model).__name__}; "
                          f"set lora.target_modules to some of the model's linear layers")
    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, peft_cfg, autocast_adapter_dtype=True)


def model_fingerprint(path: str | Path) -> str:
    """A cheap content fingerprint of a checkpoint: its config plus size and head of each weight file."""
    model_dir = resolve_model_dir(path)
    digest = hashlib.sha256()
    for file in sorted(model_dir.glob("*.json")) + sorted(model_dir.glob("*.safetensors")):
        digest.update(file.name.encode())
        digest.update(str(file.stat().st_size).encode())
        with file.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]
