"""The caption tokenizer: learned from the training captions with Hugging Face `tokenizers`, saved with
the run as `tokenizer.json` (the LDM recipe of Rombach et al. 2022, §4.3: a text encoder trained from
scratch on the captions, here with a byte-pair-encoding vocabulary, Sennrich et al. 2016).

Every prompt becomes `max_length` token ids: ``[BOS] tokens… [EOS] [PAD]…``. The `tokenizer.json` holds the
fixed padding and truncation, so the file alone reproduces the ids. A prompt longer than `max_length`
tokens is truncated (keeping [EOS]) with a warning. The empty prompt is ``[BOS] [EOS]``: never all
padding, so attention over it is always defined; it is the classifier-free-guidance null.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FILE_NAME = "tokenizer.json"
PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # a runtime dependency; say how to get it rather than fail obscurely
        raise ImportError("text conditioning needs the `tokenizers` package: pip install tokenizers") from e
    return tokenizers


class CaptionTokenizer:
    """A `tokenizers.Tokenizer` with fixed-length padding and truncation; `pad_id` marks padding."""

    def __init__(self, tokenizer, pad_id: int, source: str = "tokenizer") -> None:
        if tokenizer.truncation is None or tokenizer.padding is None:
            raise ValueError(f"{source}: the tokenizer must fix its padding and truncation length")
        self.tokenizer = tokenizer
        self.pad_id = int(pad_id)
        self.max_length = int(tokenizer.truncation["max_length"])
        self.source = source

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str] | str) -> torch.Tensor:
        """int64 ids (len(texts), max_length); prompts longer than `max_length` tokens are truncated with a
        warning naming them."""
        if isinstance(texts, str):
            texts = [texts]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"prompts must be strings, got {[type(t).__name__ for t in texts]}")
        encodings = self.tokenizer.encode_batch(list(texts))
        cut = [t for t, e in zip(texts, encodings, strict=True) if e.overflowing]
        if cut:
            shown = "; ".join(repr(t if len(t) < 80 else t[:77] + "...") for t in cut[:3])
            log.warning(
                "%d prompt(s) longer than %d tokens were truncated: %s%s",
                len(cut), self.max_length, shown, " ..." if len(cut) > 3 else "",
            )  # fmt: skip
        return torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(texts), self.max_length)

    def padding_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """bool, True where a token is real (not padding)."""
        return ids != self.pad_id

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    def hash(self) -> str:
        """SHA-256 of the serialised tokenizer: a latent cache of token ids is valid only for it."""
        return hashlib.sha256(self.to_str().encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_str(), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CaptionTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer not found: {path}")
        try:
            tok = _tokenizers().Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own Exception type for a bad file
            raise ValueError(f"{path}: not a readable tokenizer.json ({e})") from e
        if tok.padding is None:
            raise ValueError(f"{path}: the tokenizer has no fixed padding (pad id unknown)")
        return cls(tok, tok.padding["pad_id"], str(path))


def train_tokenizer(
    captions: Iterable[str], vocab_size: int = 2048, max_length: int = 32
) -> CaptionTokenizer:
    """A byte-pair-encoding tokenizer learned from `captions` (NFKC, lower case, split on whitespace and
    punctuation), with ``[BOS] … [EOS]`` around every prompt, padded and truncated to `max_length`."""
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 ([BOS], one token, [EOS]), got {max_length}")
    tk = _tokenizers()
    tok = tk.Tokenizer(tk.models.BPE(unk_token=UNK))
    tok.normalizer = tk.normalizers.Sequence([tk.normalizers.NFKC(), tk.normalizers.Lowercase()])
    tok.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    tok.decoder = tk.decoders.BPEDecoder()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=1, show_progress=False
    )
    tok.train_from_iterator(list(captions), trainer)
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    tok.post_processor = tk.processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, ids[BOS]), (EOS, ids[EOS])]
    )
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=ids[PAD], pad_token=PAD, length=max_length)
    return CaptionTokenizer(tok, ids[PAD], "learned tokenizer")
