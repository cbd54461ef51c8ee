"""The command-line flags of the suite's tiny text-conditioned U-Net (8×8 grey images on the session's tiny
autoencoder, a 1-layer 16-wide text encoder), shared by the text and web UI tests."""

TINY_TEXT_UNET = [
    "--set", "unet.base_channels=16", "--set", "unet.groups=8", "--set", "unet.num_res_blocks=1",
    "--set", "unet.channel_mult=[1,2]", "--set", "unet.attention_levels=[1]", "--set",
    "unet.head_channels=8", "--set", "train.warmup_steps=2", "--set", "train.checkpoint_every=3",
    "--set", "sample_steps=2", "--set", "text.width=16", "--set", "text.layers=1", "--set",
    "text.heads=2", "--set", "text.max_length=8", "--resolution", "8", "--channels", "1",
]  # fmt: skip
