"""Export to and import from diffusers' `DiTTransformer2DModel` folder format, without importing diffusers.

The folder holds `config.json` (the `DiTTransformer2DModel.__init__` arguments) and
`diffusion_pytorch_model.safetensors`. The two module trees differ in three ways, translated here:
- names: our ``blocks.i.{modulation,qkv,proj,fc1,fc2}`` are diffusers'
  ``transformer_blocks.i.{norm1.linear,attn1.to_q|to_k|to_v,attn1.to_out.0,ff.net.0.proj,ff.net.2}``
  (the fused qkv projection is split into three);
- our one noise-level + label embedder is, in diffusers, a copy in every block's ``norm1.emb`` (block 0's
  also drives the final layer): export writes it into every block, import requires all copies equal;
- an unconditional DiT (``num_embeds_ada_norm = 0``) has in diffusers a one-row label table (the null
  class, which its forward still needs: pass ``class_labels = 0``): export writes zeros, import folds the
  row into the bias of the noise-level MLP's last layer.
A configuration one side cannot express raises `DiffusersFormatError` naming the field.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from latentdiff.io.checkpoint import (
    diffusers_weights_file,
    load_tensors,
    read_json,
    save_diffusers_folder,
)
from latentdiff.io.model_folder import load_weights
from latentdiff.nets.dit import EPS, DiT, DiTConfig
from latentdiff.nets.unet_diffusers_format import DIFFUSERS_VERSION, DiffusersFormatError

log = logging.getLogger(__name__)

CLASS_NAME = "DiTTransformer2DModel"
FREQUENCY_SIZE = 256  # diffusers' CombinedTimestepLabelEmbeddings: Timesteps(256, ...)

# DiTTransformer2DModel.__init__ defaults, for keys a config.json leaves out
_DEFAULTS: dict[str, Any] = {
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "in_channels": 4,
    "out_channels": None,
    "num_layers": 28,
    "dropout": 0.0,
    "norm_num_groups": 32,
    "attention_bias": True,
    "sample_size": 32,
    "patch_size": 2,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "upcast_attention": False,
    "norm_type": "ada_norm_zero",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-5,
}

# fields our DiT supports with one value only (dropout, upcast_attention and norm_num_groups do not change
# what the network computes at inference and are accepted as they are)
_FIXED: dict[str, Any] = {
    "attention_bias": True,
    "activation_fn": "gelu-approximate",
    "norm_type": "ada_norm_zero",
    "norm_elementwise_affine": False,
    "norm_eps": EPS,
}

# ours -> diffusers, layers with a weight and a bias: top level, inside transformer_blocks.i, and the shared
# embedder inside transformer_blocks.i.norm1.emb
_TOP = {"patch_embed": "pos_embed.proj", "final_modulation": "proj_out_1", "final_linear": "proj_out_2"}
_BLOCK = {"modulation": "norm1.linear", "proj": "attn1.to_out.0", "fc1": "ff.net.0.proj", "fc2": "ff.net.2"}
_QKV = ("attn1.to_q", "attn1.to_k", "attn1.to_v")
_EMBEDDER = {
    "time_embed.linear_1": "timestep_embedder.linear_1",
    "time_embed.linear_2": "timestep_embedder.linear_2",
}
_LABELS = ("class_embed.weight", "class_embedder.embedding_table.weight")


def _pairs(mapping: dict[str, str], ours: str = "", theirs: str = "") -> list[tuple[str, str]]:
    """(our name, diffusers name) of every weight and bias of `mapping`'s layers, under the two prefixes."""
    return [(f"{ours}{a}.{s}", f"{theirs}{b}.{s}") for a, b in mapping.items() for s in ("weight", "bias")]


def diffusers_dit_config(cfg: DiTConfig) -> dict[str, Any]:
    """The `DiTTransformer2DModel` config.json equivalent of `cfg`."""
    if cfg.mlp_ratio != 4.0:
        raise DiffusersFormatError(
            f"mlp_ratio={cfg.mlp_ratio}: DiTTransformer2DModel's MLP is 4 × hidden_size"
        )
    if cfg.frequency_embedding_size != FREQUENCY_SIZE:
        raise DiffusersFormatError(
            f"frequency_embedding_size={cfg.frequency_embedding_size}: "
            f"DiTTransformer2DModel's noise-level sinusoid has {FREQUENCY_SIZE} channels"
        )
    return {
        "_class_name": CLASS_NAME,
        "_diffusers_version": DIFFUSERS_VERSION,
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.hidden_size // cfg.num_heads,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,  # = in_channels: no learned variance channels
        "num_layers": cfg.depth,
        "dropout": 0.0,
        "norm_num_groups": _DEFAULTS["norm_num_groups"],
        "sample_size": cfg.sample_size,
        "patch_size": cfg.patch_size,
        "num_embeds_ada_norm": cfg.num_classes,  # LabelEmbedding adds the null class at this index
        "upcast_attention": False,
        **_FIXED,
    }


def dit_config_from_diffusers(dconf: dict[str, Any], where: str = "config.json") -> DiTConfig:
    """`DiTConfig` of a `DiTTransformer2DModel` config.json; an unsupported value raises naming its field."""
    if dconf.get("_class_name", CLASS_NAME) != CLASS_NAME:
        raise DiffusersFormatError(f"{where}: _class_name={dconf['_class_name']!r}, expected {CLASS_NAME!r}")
    unknown = sorted(k for k in dconf if k not in _DEFAULTS and not k.startswith("_"))
    if unknown:
        log.warning("%s: ignoring %s config keys unknown to this format: %s", where, CLASS_NAME, unknown)
    c = {**_DEFAULTS, **{k: v for k, v in dconf.items() if k in _DEFAULTS}}
    for field, value in _FIXED.items():
        if c[field] != value:
            raise DiffusersFormatError(f"{where}: {field}={c[field]!r}: latentdiff's DiT has {value!r} only")
    out_channels = c["in_channels"] if c["out_channels"] is None else c["out_channels"]
    if out_channels != c["in_channels"]:
        raise DiffusersFormatError(
            f"{where}: out_channels={out_channels} differs from in_channels={c['in_channels']}: a DiT with "
            "learned variance channels (learn_sigma) cannot be expressed by latentdiff's DiT"
        )
    if c["num_embeds_ada_norm"] is None:
        raise DiffusersFormatError(f"{where}: num_embeds_ada_norm=None: adaLN-Zero needs a label table")
    if c["dropout"]:
        log.warning("%s: dropout=%s is not part of latentdiff's DiT and is dropped", where, c["dropout"])
    try:
        return DiTConfig(
            in_channels=c["in_channels"],
            out_channels=out_channels,
            sample_size=c["sample_size"],
            patch_size=c["patch_size"],
            hidden_size=c["num_attention_heads"] * c["attention_head_dim"],
            depth=c["num_layers"],
            num_heads=c["num_attention_heads"],
            mlp_ratio=4.0,
            num_classes=c["num_embeds_ada_norm"],
            frequency_embedding_size=FREQUENCY_SIZE,
        )
    except ValueError as e:
        raise DiffusersFormatError(f"{where}: {e}") from e


def dit_to_diffusers(model: DiT) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, state dict) of the equivalent `DiTTransformer2DModel`; tensors are CPU copies that
    share no memory (safetensors refuses shared tensors)."""
    cfg = model.config
    if cfg.cross_attention_dim is not None:
        raise DiffusersFormatError(
            "a text-conditioned DiT (cross_attention_dim) has no DiTTransformer2DModel equivalent "
            "(that class takes class labels only)"
        )
    config = diffusers_dit_config(cfg)
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    if cfg.num_classes == 0:  # the null-class row diffusers needs; adding zero changes nothing
        ours[_LABELS[0]] = torch.zeros(1, cfg.hidden_size, dtype=ours["time_embed.linear_2.bias"].dtype)
    names = _pairs(_TOP)
    for i in range(cfg.depth):
        names += _pairs(_BLOCK, f"blocks.{i}.", f"transformer_blocks.{i}.")
        emb = f"transformer_blocks.{i}.norm1.emb."
        names += [(a, f"{emb}{b}") for a, b in [*_pairs(_EMBEDDER), _LABELS]]
    state = {theirs: ours[a] for a, theirs in names}
    for i in range(cfg.depth):
        for s in ("weight", "bias"):
            qkv = ours[f"blocks.{i}.qkv.{s}"].chunk(3)
            state.update({f"transformer_blocks.{i}.{n}.{s}": t for n, t in zip(_QKV, qkv, strict=True)})
    return config, {k: v.to("cpu", copy=True).contiguous() for k, v in state.items()}


def _state_from_diffusers(
    theirs: dict[str, torch.Tensor], cfg: DiTConfig, where: str
) -> dict[str, torch.Tensor]:
    """Our state dict from a `DiTTransformer2DModel` one; missing, left-over or unshared tensors raise."""
    theirs = dict(theirs)

    def take(name: str) -> torch.Tensor:
        if name not in theirs:
            raise DiffusersFormatError(f"{where}: missing tensor {name!r}")
        return theirs.pop(name)

    state = {a: take(b) for a, b in _pairs(_TOP)}
    for i in range(cfg.depth):
        block = f"transformer_blocks.{i}."
        state.update({a: take(b) for a, b in _pairs(_BLOCK, f"blocks.{i}.", block)})
        for s in ("weight", "bias"):
            state[f"blocks.{i}.qkv.{s}"] = torch.cat([take(f"{block}{n}.{s}") for n in _QKV])
        for a, b in [*_pairs(_EMBEDDER), _LABELS]:
            copy = take(f"{block}norm1.emb.{b}")
            if i == 0:
                state[a] = copy
            elif not torch.equal(copy, state[a]):
                raise DiffusersFormatError(
                    f"{where}: {block}norm1.emb.{b} differs from transformer_blocks.0's: latentdiff's DiT "
                    "shares one noise-level and label embedder between all blocks"
                )
    if theirs:
        raise DiffusersFormatError(f"{where}: unexpected tensors {sorted(theirs)[:5]}")
    if cfg.num_classes == 0:  # a constant added to every embedding: fold it into the last bias
        labels = state.pop(_LABELS[0])
        if labels.shape[0] != 1:
            raise DiffusersFormatError(f"{where}: {_LABELS[1]} has {labels.shape[0]} rows, expected 1")
        state["time_embed.linear_2.bias"] = state["time_embed.linear_2.bias"] + labels[0]
    return state


def save_diffusers_dit(model: DiT, path: str | Path) -> Path:
    """Write a folder that `diffusers.DiTTransformer2DModel.from_pretrained(path)` loads (atomically)."""
    return save_diffusers_folder(*dit_to_diffusers(model), path)


def load_diffusers_dit(path: str | Path) -> DiT:
    """Build our DiT from a diffusers `DiTTransformer2DModel` folder (safetensors only; eval mode)."""
    path = Path(path)
    cfg = dit_config_from_diffusers(read_json(path / "config.json"), where=str(path / "config.json"))
    weights = diffusers_weights_file(path)
    model = DiT(cfg)
    load_weights(model, _state_from_diffusers(load_tensors(weights), cfg, str(weights)), str(weights))
    return model.eval()
