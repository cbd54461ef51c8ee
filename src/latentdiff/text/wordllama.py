"""The frozen-encoder option: the token embeddings that the `wordllama` package (MIT licence) ships inside
its wheel — a 32,000-token Llama-2 vocabulary embedded in 256 dimensions, distilled from a large language
model's input embeddings (Miller 2024, "WordLlama") — and its tokenizer.

Both are read from the installed wheel when a run is created and then saved with the run
(`tokenizer.json`, `text_encoder/`), so sampling never needs the package and nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from latentdiff.io.checkpoint import load_tensors
from latentdiff.text.encoder import TextEncoder, TextEncoderConfig
from latentdiff.text.tokenizer import CaptionTokenizer, _tokenizers

WEIGHTS = "weights/l2_supercat_256.safetensors"
TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
WIDTH = 256
PAD_TOKEN = "</s>"  # the vocabulary has no padding token: the end token pads (and so is masked, as padding)


def package_file(relative: str) -> Path:
    spec = importlib.util.find_spec("wordllama")
    if spec is None or spec.origin is None:
        raise ImportError(
            "text.encoder=wordllama needs the `wordllama` package: pip install 'latentdiff[text]'"
        )
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in this wordllama wheel (expected {relative})")
    return path


def wordllama_tokenizer(max_length: int) -> CaptionTokenizer:
    """wordllama's tokenizer (which starts every prompt with <s>), padded and truncated to `max_length`."""
    tok = _tokenizers().Tokenizer.from_file(str(package_file(TOKENIZER)))
    pad_id = tok.token_to_id(PAD_TOKEN)
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=pad_id, pad_token=PAD_TOKEN, length=max_length)
    return CaptionTokenizer(tok, pad_id, "wordllama tokenizer")


def wordllama_encoder(layers: int, heads: int, max_length: int) -> TextEncoder:
    """A text encoder whose token embedding is wordllama's (frozen), with `layers` trainable blocks on top."""
    table = load_tensors(package_file(WEIGHTS))["embedding.weight"].float()
    cfg = TextEncoderConfig(
        kind="wordllama",
        width=table.shape[1],
        layers=layers,
        heads=heads,
        vocab_size=table.shape[0],
        max_length=max_length,
        pad_id=wordllama_tokenizer(max_length).pad_id,
    )
    encoder = TextEncoder(cfg)
    encoder.token_embedding.weight.data.copy_(table)
    return encoder
