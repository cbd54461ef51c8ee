"""One image from a `GenerationParams` record: the single call that the web UI and `latentdiff sample
--from-png` both make, so that an image saved by one is made again, bit for bit, by the other.

Imports no web framework: the CLI uses it without the `ui` extra.
"""

from __future__ import annotations

from typing import Any

import torch

from latentdiff.io.generation_params import GenerationParams


def is_text_conditioned(pipe: Any) -> bool:
    """Whether the run takes a prompt (its backbone reads a text encoder's output); class-conditional and
    unconditional runs do not."""
    return bool(pipe.takes_text)


def condition_kwargs(pipe: Any, params: GenerationParams) -> dict[str, Any]:
    """The pipeline's conditioning arguments for `params`: prompts for a text-conditioned run, classes
    otherwise (None for an unconditional one)."""
    if is_text_conditioned(pipe):
        if not (params.prompt or "").strip():
            raise ValueError("this run is text-conditioned: type a prompt")
        return {"prompt": params.prompt, "negative_prompt": params.negative_prompt or None}
    if params.prompt:
        raise ValueError(f"these settings hold a prompt ({params.prompt!r}), but the run takes no text")
    if pipe.num_classes == 0 and params.class_label is not None:
        raise ValueError(
            f"these settings name the class {params.class_label!r}, but the run is unconditional"
        )
    return {"class_labels": params.class_label, "negative_class_labels": params.negative_class}


def generate_image(pipe: Any, params: GenerationParams, callback: Any = None) -> torch.Tensor:
    """`params.mode == "generate"`: one image, (1, C, H, W) float in [-1, 1] on the CPU, from
    `pipe(num_images=1, seed=params.seed, …)`. `callback` sees each sampler step (live preview, cancel)."""
    if params.mode != "generate":
        raise ValueError(f"these settings are of a {params.mode!r} image, not a generated one")
    opts = {"callback": callback} if callback is not None else {}
    opts.update({k: v for k, v in (("height", params.height), ("width", params.width)) if v is not None})
    return pipe(
        num_images=1,
        steps=params.steps,
        sampler=params.sampler,
        guidance_scale=params.guidance,
        guidance=params.guidance_kind,
        seed=params.seed,
        output_type="pt",
        **condition_kwargs(pipe, params),
        **opts,
    )
