"""The demo models' tokenizer: a byte-level BPE trained locally, with the Tulu chat markers and template.

``train_tokenizer`` learns merges from the given texts with the ``tokenizers`` library (deterministic for
the same texts) and wraps the result as a ``PreTrainedTokenizerFast``, so it is saved, loaded and used
exactly like a real checkpoint's tokenizer. The chat markers ``<|system|>``, ``<|user|>``,
``<|assistant|>`` are special tokens (one id each) and the chat template renders messages exactly as
:func:`inflow.data.render.render_chat` does. Encoding plain text adds no BOS/EOS: the encoders in
``inflow.data.render`` add BOS themselves, for this tokenizer and a user's alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from inflow.errors import InflowError

log = logging.getLogger(__name__)

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
CHAT_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD, *CHAT_MARKERS)
MODEL_MAX_LENGTH = 1_000_000  # no practical limit: data.max_seq_len truncates

# Renders like inflow.data.render.render_chat: "<|role|>\n" + content.strip() + ("</s>" for assistant) + "\n".
# Jinja's ``trim`` is Python's str.strip(). The generation prompt is the assistant marker, as in Tulu.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\\n' + (message['content'] | trim) }}"
    "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- endif -%}"
    "{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it with special tokens and the chat template.

    Ids 0-6 are ``<unk> <s> </s> <pad> <|system|> <|user|> <|assistant|>``; the 256 byte symbols always
    belong to the vocabulary, so the size is at least 263 whatever ``vocab_size`` asks for.
    """
    minimum = len(SPECIAL_TOKENS) + 256
    if vocab_size < minimum:
        log.warning("vocab_size=%d is below the byte alphabet + special tokens; the vocabulary will have %d",
                    vocab_size, minimum)
    core = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, minimum),
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=list(CHAT_MARKERS),
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    log.info("trained a byte-level BPE tokenizer with %d tokens", len(tokenizer))
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Write ``tokenizer`` (with its chat template) to the directory ``path`` with ``save_pretrained``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    return path


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained(path)``: the same code path a user's own checkpoint takes.

    Raises InflowError when nothing loadable is there or the tokenizer has no EOS token (answers end
    with EOS, so selection and training need one).
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise InflowError(f"{path}: cannot load a tokenizer ({str(exc).splitlines()[0]}); point at a directory "
                          "written by save_pretrained (tokenizer.json / tokenizer_config.json)") from None
    if tokenizer.eos_token_id is None:
        raise InflowError(f"{path}: the tokenizer has no eos token; set one (tokenizer.eos_token = '</s>' or the "
                          "model's end-of-turn token) and save it again with save_pretrained")
    return tokenizer


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to pad batches with: the pad token's, else EOS's (padding is masked, so either is safe)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is None:
        raise InflowError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    return int(tokenizer.eos_token_id)
