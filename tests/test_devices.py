"""Device defaults: precision auto, the token budget per gradient batch, the features per sketch call."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from inflow.devices import CPU_BATCH_TOKENS, CPU_GROUP_MIB, autocast_dtype, default_batch_tokens, default_group_mib
from inflow.devices import resolve_precision
from inflow.errors import InflowError

GIB = 1 << 30


def test_precision_auto_is_float32_on_a_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "float32" and autocast_dtype("auto", cpu) is None
    assert resolve_precision("bfloat16", cpu) == "bfloat16"
    with pytest.raises(InflowError, match="float16 needs a GPU"):
        autocast_dtype("float16", cpu)


def test_batch_tokens_scale_with_free_memory_and_model_size() -> None:
    cuda = torch.device("cuda")  # only the type is read: no GPU needed
    one_b = LlamaConfig(hidden_size=2048, num_hidden_layers=16, vocab_size=128256)
    seven_b = LlamaConfig(hidden_size=4096, num_hidden_layers=32, vocab_size=32000)
    small, big = default_batch_tokens(one_b, cuda, free_bytes=130 * GIB), default_batch_tokens(seven_b, cuda, 130 * GIB)
    assert small % 256 == 0 and big % 256 == 0
    assert big < small  # a larger model holds more per token
    assert big >= 2048  # a 2048-token row of the 7B shape fits an H200 (LESS's setting)
    per_token = 64 * 32 * 4096 + 8 * 32000
    assert big == int(0.6 * 130 * GIB / per_token) // 256 * 256
    assert default_batch_tokens(one_b, cuda, free_bytes=GIB // 100) == 256  # never below one small batch
    # with checkpointing a layer keeps its input alone: about 5.5 times the tokens at 7B
    wide = default_batch_tokens(seven_b, cuda, 130 * GIB, checkpointing=True)
    assert wide == int(0.6 * 130 * GIB / ((8 * 32 + 64) * 4096 + 8 * 32000)) // 256 * 256
    assert 4.5 * big < wide < 6 * big
    assert default_batch_tokens(one_b, torch.device("cpu")) == CPU_BATCH_TOKENS


def test_sketch_groups_hold_64_rows_of_a_7b_gradient_on_an_h200() -> None:
    cuda = torch.device("cuda")  # only the type is read
    h200 = default_group_mib(cuda, total_bytes=143771 << 20)
    assert h200 == 143771 // 64
    seven_b_row = 4 * 32 * 4 * 8 * (4096 + 4096)  # float32 LoRA r 8 gradient on q,k,v,o of Llama-2-7B
    assert (h200 << 20) // seven_b_row >= 64  # a whole tile of the fused kernel (TILES block_b)
    assert default_group_mib(cuda, total_bytes=8 * GIB) == CPU_GROUP_MIB  # never below the CPU's
    assert default_group_mib(torch.device("cpu")) == CPU_GROUP_MIB == 256


def test_module_bytes_counts_parameters_and_buffers() -> None:
    from inflow.devices import module_bytes

    layer = torch.nn.BatchNorm1d(10)  # 20 parameters, 21 buffer entries (running mean/var, batch count)
    assert module_bytes(layer) == 20 * 4 + 20 * 4 + 8
