"""A text-conditioned backbone: the text encoder τ_θ and the backbone ε_θ as one model, trained jointly
(Rombach et al. 2022, §3.3, eq. 3: ``L = E ‖ε − ε_θ(z_t, t, τ_θ(y))‖²`` with τ_θ learned together with ε_θ).

It keeps the backbone contract (`nets.backbones`) over the conditioning key ``"text"``: int64 token ids
(B, L), which is what the data, the latent cache and the pipeline carry. Inside, the ids become the
backbone's ``"text_embeddings"`` and ``"text_mask"``. The null of ``"text"`` (classifier-free guidance)
is the empty prompt's ids, so caption dropout trains the model on the empty prompt, as Stable Diffusion
does, and a negative prompt simply takes the null's place in guidance.

In a run folder: the backbone in `unet/`, the encoder in `text_encoder/`, the tokenizer in `tokenizer.json`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from latentdiff.nets import conditioning
from latentdiff.text.encoder import TextEncoder
from latentdiff.text.tokenizer import FILE_NAME as TOKENIZER_FILE
from latentdiff.text.tokenizer import CaptionTokenizer

log = logging.getLogger(__name__)

ENCODER_FOLDER = "text_encoder"
_BACKBONE, _ENCODER = "backbone.", "text_encoder."


class TextConditioned(nn.Module):
    """``forward(x, c_noise, {"text": ids, ...})`` = backbone(x, c_noise, {embeddings, mask, ...})."""

    def __init__(self, backbone: nn.Module, text_encoder: TextEncoder, tokenizer: CaptionTokenizer) -> None:
        super().__init__()
        width = getattr(backbone.config, "cross_attention_dim", None)
        if width != text_encoder.width:
            raise ValueError(
                f"the backbone's cross_attention_dim ({width}) must equal the text encoder's width "
                f"({text_encoder.width})"
            )
        if (
            tokenizer.max_length != text_encoder.config.max_length
            or tokenizer.vocab_size > text_encoder.config.vocab_size
        ):
            enc = text_encoder.config
            raise ValueError(
                f"the tokenizer ({tokenizer.vocab_size} tokens, length {tokenizer.max_length}) does not fit "
                f"the text encoder ({enc.vocab_size} tokens, length {enc.max_length})"
            )
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.register_buffer("null_ids", tokenizer.encode([""])[0], persistent=False)

    # the backbone contract, delegated
    @property
    def config(self):
        return self.backbone.config

    def config_dict(self) -> dict:
        return self.backbone.config_dict()

    @property
    def cond_keys(self) -> tuple[str, ...]:
        inner = tuple(
            k
            for k in self.backbone.cond_keys
            if k not in (conditioning.TEXT_EMBEDDINGS, conditioning.TEXT_MASK)
        )
        return (conditioning.TEXT, *inner)

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids (len(prompts), L) on this model's device; over-long prompts are truncated (warned)."""
        return self.tokenizer.encode(list(prompts)).to(self.null_ids.device)

    def null_cond(self, cond: conditioning.Condition) -> dict[str, torch.Tensor]:
        """The empty prompt for ``"text"`` (and the backbone's nulls for its other keys), same batch."""
        cond = conditioning.check_keys(cond, self.cond_keys, "this text-conditioned model")
        out = self.backbone.null_cond({k: v for k, v in cond.items() if k != conditioning.TEXT})
        if conditioning.TEXT in cond:
            ids = torch.as_tensor(cond[conditioning.TEXT])
            out[conditioning.TEXT] = self.null_ids.to(ids.device).expand(len(ids), -1).clone()
        return out

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor | float | int, cond: conditioning.Condition | None = None
    ) -> torch.Tensor:
        cond = conditioning.check_keys(cond, self.cond_keys, "this text-conditioned model")
        ids = cond.pop(conditioning.TEXT, None)
        if ids is None:  # unconditional: the empty prompt
            ids = self.null_ids.expand(len(x), -1)
        ids = torch.as_tensor(ids, device=x.device)
        if ids.shape != (len(x), self.tokenizer.max_length):
            raise ValueError(
                f"cond['text'] must be token ids of shape ({len(x)}, {self.tokenizer.max_length}), "
                f"got {tuple(ids.shape)}"
            )
        embeddings, mask = self.text_encoder(ids)
        cond[conditioning.TEXT_EMBEDDINGS] = embeddings
        cond[conditioning.TEXT_MASK] = mask
        return self.backbone(x, c_noise, cond)

    # ------------------------------------------------------------------------------------------- run folder
    def save_parts(
        self,
        backbone_folder: Path,
        state: Mapping[str, torch.Tensor],
        ema: Mapping[str, torch.Tensor] | None,
        save_backbone: Callable[[Path, dict, dict | None], object],
    ) -> None:
        """Write `state` (this model's state dict) as the backbone folder (through `save_backbone(folder,
        state, ema)`) and `text_encoder/` beside it."""
        (b_state, e_state), (b_ema, e_ema) = split_state(state), split_state(ema) if ema else (None, None)
        save_backbone(backbone_folder, b_state, b_ema)
        from latentdiff.io.checkpoint import save_model_folder

        save_model_folder(
            backbone_folder.parent / ENCODER_FOLDER, self.text_encoder.config_dict(), e_state, e_ema
        )


def split_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone state, text encoder state) of a `TextConditioned` state dict."""
    backbone = {k.removeprefix(_BACKBONE): v for k, v in state.items() if k.startswith(_BACKBONE)}
    encoder = {k.removeprefix(_ENCODER): v for k, v in state.items() if k.startswith(_ENCODER)}
    return backbone, encoder


def merge_state(
    backbone: Mapping[str, torch.Tensor], encoder: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The `TextConditioned` state dict of its two parts (inverse of `split_state`)."""
    return {
        **{_BACKBONE + k: v for k, v in backbone.items()},
        **{_ENCODER + k: v for k, v in encoder.items()},
    }


def is_text_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / ENCODER_FOLDER / "config.json").is_file()


def load_text_conditioned(run_dir: str | Path, backbone: nn.Module, weights: str = "auto") -> TextConditioned:
    """The backbone of a run joined with the run's `text_encoder/` and `tokenizer.json`."""
    run_dir = Path(run_dir)
    tokenizer = CaptionTokenizer.load(run_dir / TOKENIZER_FILE)
    encoder = TextEncoder.from_pretrained(run_dir / ENCODER_FOLDER, weights=weights)
    return TextConditioned(backbone, encoder, tokenizer).eval()
