"""The text-conditioned U-Net in diffusers' `UNet2DConditionModel` format, without importing diffusers.

A U-Net with `cross_attention_dim` mirrors `UNet2DConditionModel` module for module (attention levels are
`CrossAttnDownBlock2D` / `CrossAttnUpBlock2D` whose `attentions` are `Transformer2DModel`s, the middle is
`UNetMidBlock2DCrossAttn`), so weights keep their names and only the configuration is translated.
`UNet2DConditionModel`'s `attention_head_dim` is, despite its name, the number of heads per block.
"""

from __future__ import annotations

from typing import Any

from latentdiff.nets.unet import UNetConfig

CLASS_NAME = "UNet2DConditionModel"

# UNet2DConditionModel.__init__ arguments this format writes with one value and accepts only with it
_FIXED: dict[str, Any] = {
    "center_input_sample": False,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "only_cross_attention": False,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "num_attention_heads": None,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "upcast_attention": False,
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "projection_class_embeddings_input_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "cross_attention_norm": None,
}
# their defaults where they differ from the value above (a config.json that leaves a key out)
_DEFAULT_IF_ABSENT: dict[str, Any] = {"norm_eps": 1e-5, "norm_num_groups": 32, "dropout": 0.0}


def condition_diffusers_config(cfg: UNetConfig, version: str) -> dict[str, Any]:
    """The `UNet2DConditionModel` config.json equivalent of a text U-Net's `cfg`."""
    from latentdiff.nets.unet_diffusers_format import DiffusersFormatError

    if not cfg.mid_attention:
        raise DiffusersFormatError(
            "a text U-Net without mid_attention has no UNet2DConditionModel equivalent (its plain middle "
            "block has one ResBlock, ours two)"
        )
    levels = range(len(cfg.channel_mult))
    attn = set(cfg.attention_levels)
    freq_shift = int(cfg.freq_shift) if float(cfg.freq_shift).is_integer() else cfg.freq_shift
    return {
        "_class_name": CLASS_NAME,
        "_diffusers_version": version,
        **_FIXED,
        "sample_size": cfg.sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "flip_sin_to_cos": cfg.flip_sin_to_cos,
        "freq_shift": freq_shift,
        "down_block_types": ["CrossAttnDownBlock2D" if i in attn else "DownBlock2D" for i in levels],
        "up_block_types": ["CrossAttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(levels)],
        "block_out_channels": list(cfg.level_channels),
        "layers_per_block": cfg.num_res_blocks,
        "dropout": cfg.dropout,
        "norm_num_groups": cfg.groups,
        "norm_eps": cfg.eps,
        "cross_attention_dim": cfg.cross_attention_dim,
        "attention_head_dim": [cfg.heads(ch) for ch in cfg.level_channels],
        "num_class_embeds": cfg.num_classes + 1 if cfg.num_classes > 0 else None,
        "resnet_time_scale_shift": "scale_shift" if cfg.scale_shift else "default",
        "time_embedding_dim": cfg.temb_channels,
    }


def config_from_condition_diffusers(dconf: dict[str, Any], where: str) -> UNetConfig:
    """`UNetConfig` of a `UNet2DConditionModel` config.json; what our U-Net cannot express raises naming the
    field."""
    from latentdiff.nets.unet_diffusers_format import DiffusersFormatError

    c = {**_DEFAULT_IF_ABSENT, **dconf}

    def fail(field: str, why: str) -> DiffusersFormatError:
        return DiffusersFormatError(f"{where}: {field}={c.get(field)!r}: {why}")

    for field, value in _FIXED.items():
        got = c.get(field, value)
        if isinstance(value, int | float) and not isinstance(value, bool) and isinstance(got, list):
            got = got[0] if len(set(got)) == 1 else got
        if got != value and not (field == "act_fn" and got == "swish"):
            raise fail(field, f"only {value!r} can be expressed by latentdiff's U-Net")
    chans = list(c["block_out_channels"])
    down, up = list(c["down_block_types"]), list(c["up_block_types"])
    if len(down) != len(chans) or any(n not in ("DownBlock2D", "CrossAttnDownBlock2D") for n in down):
        raise fail("down_block_types", "needs one DownBlock2D or CrossAttnDownBlock2D per block_out_channels")
    attention_levels = tuple(i for i, n in enumerate(down) if n == "CrossAttnDownBlock2D")
    mirrored = [
        "CrossAttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(len(down)))
    ]
    if up != mirrored:
        raise fail("up_block_types", f"must mirror down_block_types, i.e. {mirrored}")
    if isinstance(c["layers_per_block"], list | tuple) or isinstance(c["cross_attention_dim"], list | tuple):
        raise fail("layers_per_block", "per-block lists of layers or cross_attention_dim cannot be expressed")
    temb = c.get("time_embedding_dim")
    base = chans[0] if temb is None else temb // 4
    if (temb is not None and temb % 4) or any(ch % base for ch in chans):
        raise fail("time_embedding_dim", "must be 4 × the first block's width, which divides every width")
    heads = c["attention_head_dim"]
    heads = list(heads) if isinstance(heads, list | tuple) else [heads] * len(chans)
    used = [heads[i] for i in attention_levels] + [heads[-1]]
    head_channels = {chans[i] // heads[i] for i in attention_levels} | {chans[-1] // heads[-1]}
    if len(head_channels) == 1 and all(chans[i] % heads[i] == 0 for i in [*attention_levels, len(chans) - 1]):
        head_kw: dict[str, Any] = {"head_channels": head_channels.pop(), "num_heads": None}
    elif len(set(used)) == 1:
        head_kw = {"head_channels": None, "num_heads": used[0]}
    else:
        raise fail("attention_head_dim", "needs equal head widths or an equal number of heads in every block")
    size = c.get("sample_size")
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise fail("sample_size", "only square samples can be expressed")
        size = size[0]
    num_class_embeds = c.get("num_class_embeds")
    try:
        return UNetConfig(
            in_channels=c["in_channels"],
            out_channels=c["out_channels"],
            sample_size=int(size or 2 ** (len(chans) - 1)),
            base_channels=base,
            channel_mult=tuple(ch // base for ch in chans),
            num_res_blocks=c["layers_per_block"],
            attention_levels=attention_levels,
            mid_attention=True,
            dropout=float(c["dropout"]),
            groups=c["norm_num_groups"],
            eps=float(c["norm_eps"]),
            num_classes=num_class_embeds - 1 if num_class_embeds else 0,
            scale_shift=c.get("resnet_time_scale_shift", "default") == "scale_shift",
            flip_sin_to_cos=bool(c.get("flip_sin_to_cos", True)),
            freq_shift=float(c.get("freq_shift", 0)),
            cross_attention_dim=int(c["cross_attention_dim"]),
            **head_kw,
        )
    except ValueError as e:
        raise DiffusersFormatError(f"{where}: {e}") from e
