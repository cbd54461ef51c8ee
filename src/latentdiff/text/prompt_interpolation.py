"""Conditioning on the way between two prompts: what `LatentDiffusionPipeline.interpolate_prompts` denoises.

Between the endpoints, the conditioning is the linear interpolation of the two prompts' text-encoder
outputs, token by token, ``(1 − α)·τ(a) + α·τ(b)``, with the initial noise held fixed — the common practice
of prompt interpolation in Stable Diffusion (e.g. the Keras example "A walk through latent space with
Stable Diffusion", Stenbit, Chollet & Wood 2022, which walks `linspace(encoding_1, encoding_2)` at one
seed). Stable Diffusion's U-Net attends to all 77 CLIP token states, padding included, so interpolating the
whole tensor drops nothing. Here cross-attention ignores padding (`text_mask`); the mask in between is the
union of both prompts' masks, so that every token real in either prompt stays visible while its weight
moves from one prompt to the other — with the mask of `a` alone, the tokens only `b` has (a longer prompt)
would appear only at the last step.

The endpoints are the prompts themselves, through the token-id path that plain sampling takes (each with
its own mask), so they equal `pipe(prompt=a | b, seed=…)` bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from latentdiff.nets.conditioning import TEXT, TEXT_EMBEDDINGS, TEXT_MASK
from latentdiff.text.conditioned import TextConditioned

Conds = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]


def embedded(model: TextConditioned, cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`cond` with its token ids (``"text"``) replaced by what the backbone reads: the text encoder's
    ``"text_embeddings"`` and ``"text_mask"``."""
    out = dict(cond)
    out[TEXT_EMBEDDINGS], out[TEXT_MASK] = model.text_encoder(out.pop(TEXT))
    return out


def between(model: TextConditioned, ids_a: torch.Tensor, ids_b: torch.Tensor, alpha: float) -> dict:
    """The backbone's text conditioning at `alpha` ∈ [0, 1] from prompt `a` to `b` (ids (1, L) each):
    linearly interpolated token states under the union of both padding masks."""
    (emb_a, emb_b), (mask_a, mask_b) = (t.chunk(2) for t in model.text_encoder(torch.cat([ids_a, ids_b])))
    return {TEXT_EMBEDDINGS: torch.lerp(emb_a, emb_b, alpha), TEXT_MASK: mask_a | mask_b}


def prompt_path(
    model: TextConditioned, end_a: Conds, end_b: Conds, n: int
) -> Iterator[tuple[nn.Module, Conds]]:
    """(model, (cond, uncond)) for each of `n` images from prompt `a` to `b`, given each prompt's
    (cond, uncond) for one image as the pipeline builds them (``{"text": ids}``; the same uncond at both
    ends: the empty or the negative prompt). The endpoints run `model` on their ids; the images between
    run the backbone inside it on interpolated text-encoder outputs."""
    uncond = end_a[1]
    inner_uncond = None if uncond is None else embedded(model, uncond)
    for i in range(n):
        if i in (0, n - 1):
            yield model, (end_a if i == 0 else end_b)
        else:
            cond = between(model, end_a[0][TEXT], end_b[0][TEXT], i / (n - 1))
            yield model.backbone, (cond, inner_uncond)
