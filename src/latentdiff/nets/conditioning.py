"""The conditioning a backbone is told: one mapping of named tensors, batch first.

Keys in use: ``"class"`` (int64 (B,), index ``num_classes`` = the learned null class); ``"text"`` (int64
(B, L) token ids of a prompt, what the data, the latent cache and the pipeline carry; its null is the
empty prompt's ids, `text.conditioned`), which the text encoder turns into the backbone's
``"text_embeddings"`` (float (B, L, D)) and ``"text_mask"`` (bool (B, L), True = a real token, False =
padding, which cross-attention ignores). Every key has a
"null" value the backbone learns during classifier-free-guidance training (Ho & Salimans 2022, sec. 3.2):
`null_condition` builds it for a batch, `drop_condition` swaps it in for the rows a mask selects. Adding a
kind of conditioning means a key here, its encoder in the backbones, and where the data stores it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Condition = Mapping[str, Tensor]

CLASS = "class"
TEXT = "text"
TEXT_EMBEDDINGS = "text_embeddings"
TEXT_MASK = "text_mask"


def check_keys(cond: Condition | None, accepted: tuple[str, ...], who: str) -> dict[str, Tensor]:
    """`cond` as a dict, refused with the offending key named when `who` does not take it."""
    if cond is not None and not isinstance(cond, Mapping):
        raise TypeError(
            f"the conditioning of {who} is a mapping of named tensors such as {{'class': labels}}, "
            f"got {type(cond).__name__}"
        )
    cond = dict(cond or {})
    unknown = sorted(set(cond) - set(accepted))
    if unknown:
        takes = f"takes only {list(accepted)}" if accepted else "is unconditional and takes none"
        raise ValueError(f"conditioning {unknown} given to {who}, which {takes}")
    return cond


def class_labels(cond: Condition, num_classes: int, batch: int, device: torch.device) -> Tensor:
    """The checked int64 (B,) labels of ``cond["class"]`` (a scalar is repeated); absent → the null class."""
    labels = cond.get(CLASS)
    if labels is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    labels = torch.as_tensor(labels, device=device).long()
    labels = labels.expand(batch) if labels.ndim == 0 else labels
    if labels.shape != (batch,):
        raise ValueError(f"cond['class'] must be a scalar or of shape ({batch},), got {tuple(labels.shape)}")
    if bool(((labels < 0) | (labels > num_classes)).any()):
        raise ValueError(
            f"cond['class'] must lie in 0..{num_classes} ({num_classes} = null class), got {labels.tolist()}"
        )
    return labels


def text_context(cond: Condition, batch: int, width: int) -> tuple[Tensor, Tensor | None]:
    """(embeddings (B, L, width), mask bool (B, L) or None) of a text-conditioned backbone's `cond`,
    checked; a missing mask attends to every token."""
    emb = cond.get(TEXT_EMBEDDINGS)
    if emb is None:
        raise ValueError(
            f"this backbone is text-conditioned: cond['{TEXT_EMBEDDINGS}'] of shape ({batch}, L, {width}) is "
            "required (the text encoder's output; `text.conditioned.TextConditioned` makes it from token ids)"
        )
    if emb.ndim != 3 or emb.shape[0] != batch or emb.shape[2] != width:
        raise ValueError(
            f"cond['{TEXT_EMBEDDINGS}'] must be of shape ({batch}, L, {width}), got {tuple(emb.shape)}"
        )
    mask = cond.get(TEXT_MASK)
    if mask is not None and tuple(mask.shape) != tuple(emb.shape[:2]):
        raise ValueError(
            f"cond['{TEXT_MASK}'] must be of shape {tuple(emb.shape[:2])}, got {tuple(mask.shape)}"
        )
    return emb, None if mask is None else mask.to(device=emb.device, dtype=torch.bool)


def null_condition(cond: Condition, num_classes: int) -> dict[str, Tensor]:
    """The unconditional counterpart of `cond`: every key replaced by its null value, same batch."""
    out: dict[str, Tensor] = {}
    for key, value in cond.items():
        if key == CLASS:
            out[key] = torch.full_like(torch.as_tensor(value), num_classes)
        else:
            raise ValueError(f"no null value is defined for conditioning {key!r}")
    return out


def drop_condition(cond: Condition, null: Condition, drop: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rows of ``cond[key]`` where the bool (B,) mask ``drop[key]`` is set replaced by ``null[key]``
    (classifier-free guidance training); keys without a mask pass unchanged."""
    out = dict(cond)
    for key, mask in drop.items():
        value, empty = cond[key], null[key]
        shaped = mask.to(value.device).reshape(-1, *[1] * (value.ndim - 1))
        out[key] = torch.where(shaped, empty, value)
    return out
