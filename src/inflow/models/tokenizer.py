"""The demo models' tokenizer: a byte-level BPE trained locally, with the Tulu chat markers and template.

``train_tokenizer`` learns merges from the given texts with the ``tokenizers`` library (deterministic for
the same texts) and wraps the result as a ``PreTrainedTokenizerFast``, so it is saved, loaded and used
exactly like a real checkpoint's tokenizer. The chat marker lines ``"<|system|>\\n"``, ``"<|user|>\\n"``,
``"<|assistant|>\\n"`` are special tokens, newline included (one id each), and the chat template renders
messages exactly as :func:`inflow.data.render.render_chat` does. Encoding plain text adds no BOS/EOS: the
encoders in ``inflow.data.render`` add BOS themselves, for this tokenizer and a user's alike.

Like Llama-2's SentencePiece tokenizer (the model LESS was built on), every encoded text that starts with
a word gets a leading space (``"lamps"`` -> ``["Ġlamps"]``), so a word starts with the same token wherever
it is: in running text, or as an answer. Without it, an extractive answer (``"lamps"``) and the span it
copies (``" lamps"``) had different tokens, and the answer fell apart into rare letter pieces the tiny
models could not learn to produce from the span (``docs/architecture.md``). A text that starts with
whitespace (``"\\n..."``) is left alone. Because a marker token ends with its newline, the text after a
marker (a message's content, an answer) is a text of its own and gets the space too, also when
:mod:`inflow.data.render` tokenizes the whole rendered conversation at once, as open-instruct does
(``"<|assistant|>\\n" "Ġlamps"``; Llama-2 itself would give ``"<0x0A>" "l" "amps"``). The decoder drops
that space again after a marker, so decoding a rendered conversation gives back its text.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from inflow.errors import InflowError

log = logging.getLogger(__name__)

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
CHAT_MARKERS = ("<|system|>\n", "<|user|>\n", "<|assistant|>\n")  # newline included: see the module docstring
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD, *CHAT_MARKERS)
MODEL_MAX_LENGTH = 1_000_000  # no practical limit: data.max_seq_len truncates
_SPECIAL_SPLIT = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))

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

    Ids 0-6 are ``<unk> <s> </s> <pad>`` and the three marker lines (``<|system|>\\n`` ...); the 256 byte
    symbols always belong to the vocabulary, so the size is at least 263 whatever ``vocab_size`` asks for.
    """
    minimum = len(SPECIAL_TOKENS) + 256
    if vocab_size < minimum:
        log.warning("vocab_size=%d is below the byte alphabet + special tokens; the vocabulary will have %d",
                    vocab_size, minimum)
    core = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    # Prefix space per encoded text (each text between special tokens), unless it starts with whitespace.
    core.normalizer = normalizers.Sequence([normalizers.Prepend(" "), normalizers.Replace(Regex(r"\A (?=\s)"), "")])
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # The space the normalizer gave the text after a marker is not part of the text: drop it when decoding.
    after_marker = "|".join(re.escape(marker) for marker in CHAT_MARKERS)
    core.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace(Regex(f"(?<={after_marker}) "), "")])
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, minimum),
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Learn from the pieces that encoding sees: text between special tokens, each normalized on its own.
    pieces = (piece for text in texts for piece in _SPECIAL_SPLIT.split(text) if piece)
    core.train_from_iterator(pieces, trainer=trainer)
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


GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""``tokenizer_class`` values that mean "exactly the pipeline in tokenizer.json"."""


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved at ``path``, loaded with ``from_pretrained``.

    ``AutoTokenizer.from_pretrained(path)`` for a checkpoint that declares its own tokenizer class (a user's
    Llama or Qwen2). A directory whose ``tokenizer_config.json`` declares the generic class (ours) loads as
    that class: transformers 5's ``AutoTokenizer`` would otherwise pick the class registered for the
    *model* type in ``config.json`` (``Qwen2Tokenizer`` for a qwen2 model), which rebuilds Qwen2's own
    normaliser and pre-tokenizer around our vocabulary and silently tokenizes differently from the
    tokenizer that was saved.

    Raises InflowError when nothing loadable is there or the tokenizer has no EOS token (answers end
    with EOS, so selection and training need one).
    """
    try:
        if _declared_class(Path(path)) in GENERIC_CLASSES:
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise InflowError(f"{path}: cannot load a tokenizer ({str(exc).splitlines()[0]}); point at a directory "
                          "written by save_pretrained (tokenizer.json / tokenizer_config.json)") from None
    if tokenizer.eos_token_id is None:
        raise InflowError(f"{path}: the tokenizer has no eos token; set one (tokenizer.eos_token = '</s>' or the "
                          "model's end-of-turn token) and save it again with save_pretrained")
    return tokenizer


def _declared_class(path: Path) -> str | None:
    """``tokenizer_class`` from ``path/tokenizer_config.json`` (None when absent or unreadable)."""
    try:
        return json.loads((path / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to pad batches with, the one pad rule of the project: the pad token's, else EOS's.

    Many checkpoints have no pad token (Llama-2, Llama-3, Mistral). Padding is masked everywhere (attention
    mask 0, label ``IGNORE_INDEX``; see :func:`inflow.data.batching.collate`), so any id is safe: EOS needs
    no new embedding row (LESS adds a ``<pad>`` token and resizes the embeddings instead; the masked
    positions change nothing either way). Raises InflowError when the tokenizer has neither.
    """
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is None:
        raise InflowError("the tokenizer has neither a pad nor an eos token; set one (tokenizer.pad_token = "
                          "tokenizer.eos_token, or add a pad token) and save it again with save_pretrained")
    return int(tokenizer.eos_token_id)
