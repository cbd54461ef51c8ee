"""Text conditioning: the caption tokenizer (learned from the training captions), the text encoder trained
jointly with the diffusion model (or frozen pretrained token embeddings), and the model that joins the
encoder to a backbone."""

from latentdiff.text.conditioned import TextConditioned, is_text_run, load_text_conditioned
from latentdiff.text.encoder import TextEncoder, TextEncoderConfig
from latentdiff.text.tokenizer import CaptionTokenizer, train_tokenizer

__all__ = [
    "CaptionTokenizer",
    "TextConditioned",
    "TextEncoder",
    "TextEncoderConfig",
    "is_text_run",
    "load_text_conditioned",
    "train_tokenizer",
]
