"""`Autoencoder`: the Stage 1 model behind one interface for the KL, VQ and identity kinds."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.modules import Decoder, Encoder
from latentdiff.autoencoder.posterior import DeterministicPosterior, DiagonalGaussian, Posterior
from latentdiff.autoencoder.quantizer import QuantizerOutput, VectorQuantizer
from latentdiff.config import ConfigError, from_dict, to_dict
from latentdiff.io.checkpoint import CheckpointError, load_model_folder, save_model_folder

FORMAT = "latentdiff.autoencoder"
VERSION = 1


@dataclass
class AutoencoderOutput:
    """`aux_loss` is the regulariser to add to the per-element-mean reconstruction objective:
    kl_weight·KL/d for `kl` (KL the per-sample sum, averaged over the batch; d = C·H·W of the image, see
    `Autoencoder`), the quantizer loss for `vq`, zero for `identity`."""

    reconstruction: torch.Tensor
    posterior: Posterior
    aux_loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Autoencoder(nn.Module):
    """Encoder → posterior (diagonal Gaussian | vector quantizer | identity) → decoder.

    KL (Rombach et al. 2022, sec. 3 / appendix G): encoder → quant_conv (1×1) → mean and log-variance;
    decoder input goes through post_quant_conv (1×1). Same layout as diffusers' `AutoencoderKL`.
    `kl_weight` means what it means in LDM (Rombach et al. 2022, appendix G, eq. 25: L_rec + L_reg with
    L_reg weighted by ~1e-6; their code sums both terms per sample): per image, the reconstruction error
    summed over the d = C·H·W image elements plus kl_weight·KL(q(z|x) ‖ N(0, I)), the KL summed over the
    latent. The reconstruction loss here is the per-element mean (`losses.reconstruction_loss`), so
    `aux_loss` is kl_weight·KL/d: the whole objective is LDM's divided by d, and the ratio of the KL term to
    the reconstruction term is LDM's.
    VQ (van den Oord et al. 2017): encoder → quant_conv → nearest code → post_quant_conv → decoder; the
    latent that Stage 2 sees is the quantized one (`codebook_dim` channels).
    identity: no parameters, f = 1; the latent is the image (the pixel-space baseline).
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        # follows .to(device) for the parameter-free identity model
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)
        self.encoder: Encoder | None = None
        self.decoder: Decoder | None = None
        self.quantize: VectorQuantizer | None = None
        if config.kind == "identity":
            return
        blocks = dict(
            block_channels=config.block_channels,
            num_res_blocks=config.num_res_blocks,
            groups=config.groups,
            mid_attention=config.mid_attention,
            dropout=config.dropout,
        )
        lat = config.latent_channels
        enc_out = 2 * lat if config.kind == "kl" and config.double_z else lat
        self.encoder = Encoder(config.in_channels, enc_out, **blocks)
        self.decoder = Decoder(lat, config.in_channels, **blocks)
        if config.kind == "kl":
            self.quant_conv = nn.Conv2d(enc_out, enc_out, 1)
            self.post_quant_conv = nn.Conv2d(lat, lat, 1)
        else:
            dim = config.latent_dim
            self.quant_conv = nn.Conv2d(lat, dim, 1)
            self.quantize = VectorQuantizer(
                config.codebook_size,
                dim,
                config.commitment_beta,
                ema=config.ema_codebook,
                decay=config.ema_decay,
                epsilon=config.ema_epsilon,
                dead_code_threshold=config.dead_code_threshold,
                restart_every=config.restart_every,
                buffer_size=config.restart_buffer_size,
            )
            self.post_quant_conv = nn.Conv2d(dim, lat, 1)

    # ------------------------------------------------------------------------------------ attributes

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def latent_channels(self) -> int:
        """Channels of the latent that `encode` returns and `decode` takes."""
        return self.config.latent_dim

    @property
    def scale_factor(self) -> float | list[float]:
        return self.config.scale_factor

    @property
    def shift_factor(self) -> float | list[float]:
        return self.config.shift_factor

    @property
    def device(self) -> torch.device:
        return self._device_anchor.device

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """(C, h, w) of the latent of an image of shape (C, H, W) (a leading batch dimension is allowed)."""
        c, h, w = self._image_chw(image_shape)
        f = self.downsample_factor
        return self.latent_channels, h // f, w // f

    def compression_ratio(self, image_shape: Sequence[int]) -> float:
        """d/k: numbers per image over numbers per latent (Rombach et al. 2022, sec. 3)."""
        c, h, w = self._image_chw(image_shape)
        return (c * h * w) / math.prod(self.latent_shape(image_shape))

    def _image_chw(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 4:
            shape = shape[1:]
        if len(shape) != 3:
            raise ValueError(f"expected an image shape (C, H, W) or (N, C, H, W), got {shape}")
        c, h, w = shape
        f = self.downsample_factor
        if c != self.config.in_channels or h % f or w % f:
            raise ValueError(
                f"image shape {shape} does not fit this autoencoder: it needs {self.config.in_channels} "
                f"channels and a height and width divisible by f={f}"
            )
        return c, h, w

    # ------------------------------------------------------------------------------- latent scaling

    def _per_channel(self, value: float | list[float], ref: torch.Tensor) -> torch.Tensor | float:
        if isinstance(value, list | tuple):
            if ref.ndim < 2 or ref.shape[1] != len(value):
                raise ValueError(
                    f"per-channel latent scaling has {len(value)} entries, latent is {tuple(ref.shape)}"
                )
            return torch.tensor(value, dtype=ref.dtype, device=ref.device).view(
                1, -1, *([1] * (ref.ndim - 2))
            )
        return value

    def to_latent(self, z_raw: torch.Tensor) -> torch.Tensor:
        """(z − shift)·scale: the latent the diffusion model is trained on."""
        return (z_raw - self._per_channel(self.shift_factor, z_raw)) * self._per_channel(
            self.scale_factor, z_raw
        )

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """z/scale + shift: inverse of `to_latent`."""
        return z / self._per_channel(self.scale_factor, z) + self._per_channel(self.shift_factor, z)

    # -------------------------------------------------------------------------------- encode/decode

    def _check_images(self, x: torch.Tensor) -> None:
        f = self.downsample_factor
        c = self.config.in_channels
        if x.ndim == 4 and x.shape[1] != c:
            raise ValueError(
                f"Autoencoder.encode: the images have {x.shape[1]} channel(s), but this autoencoder takes "
                f"{c}: load them with {c} channel(s) (--channels {c}), got images of shape {tuple(x.shape)}"
            )
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"Autoencoder.encode: expected images (N, {self.config.in_channels}, H, W) with H and W "
                f"divisible by f={f}, got {tuple(x.shape)}"
            )

    def _check_latents(self, z: torch.Tensor) -> None:
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"Autoencoder.decode: expected latents (N, {self.latent_channels}, h, w), "
                f"got {tuple(z.shape)}"
            )

    def _quantize_forward(self, x: torch.Tensor) -> QuantizerOutput:
        return self.quantize(self.quant_conv(self.encoder(x)))

    def encode(self, x: torch.Tensor) -> Posterior:
        """Images in [-1, 1] (N, C, H, W) → posterior over raw (unscaled) latents."""
        self._check_images(x)
        if self.kind == "identity":
            return DeterministicPosterior(x)
        if self.kind == "vq":
            q = self._quantize_forward(x)
            return DeterministicPosterior(q.z_q, q.indices)
        moments = self.quant_conv(self.encoder(x))
        if not self.config.double_z:
            return DeterministicPosterior(moments)
        return DiagonalGaussian.from_moments(moments, self.config.logvar_min, self.config.logvar_max)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents → images. VQ snaps `z` to its nearest codes first, so samples of a diffusion model
        trained on quantized latents decode to valid codes."""
        self._check_latents(z)
        if self.kind == "identity":
            return z
        if self.kind == "vq":
            z, _ = self.quantize.quantize(z)
        return self._decode(z)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """VQ only: code indices (N, h, w) → images."""
        return self._decode(self.indices_to_latent(indices))

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        """VQ only: code indices (N, h, w) → quantized raw latent (N, codebook_dim, h, w)."""
        if self.quantize is None:
            raise ValueError(f"indices_to_latent needs a 'vq' autoencoder, this one is '{self.kind}'")
        if indices.ndim != 3:
            raise ValueError(f"expected code indices of shape (N, h, w), got {tuple(indices.shape)}")
        return self.quantize.lookup(indices.to(self.device))

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_posterior: bool = True,
        noise: torch.Tensor | None = None,
    ) -> AutoencoderOutput:
        """Reconstruct `x`; `sample_posterior=False` decodes the posterior mean (KL only). The posterior
        sample's ε comes from `generator`, or is `noise` (shaped like the latent) when given."""
        self._check_images(x)
        zero = torch.zeros((), device=x.device)
        if self.kind == "identity":
            return AutoencoderOutput(x, DeterministicPosterior(x), zero, {})
        if self.kind == "vq":
            q = self._quantize_forward(x)
            logs = {
                "vq_loss": float(q.loss.detach()),
                "codebook_loss": float(q.codebook_loss.detach()),
                "commitment_loss": float(q.commitment_loss.detach()),
                "perplexity": float(q.perplexity),
                "codebook_usage": q.usage,
                "restarted_codes": float(q.restarted),
            }
            posterior = DeterministicPosterior(q.z_q, q.indices)
            return AutoencoderOutput(self._decode(q.z_q), posterior, q.loss, logs)
        posterior = self.encode(x)
        z = posterior.sample(generator, noise) if sample_posterior else posterior.mode()
        kl = posterior.kl().mean()  # per-sample sum, averaged over the batch
        elements = x[0].numel()  # d = C·H·W: the reconstruction is a mean over these
        aux = self.config.kl_weight / elements * kl if self.config.double_z else zero
        logs = {"kl": float(kl.detach()), "posterior_std": float(posterior.std.detach().float().mean())}
        return AutoencoderOutput(self._decode(z), posterior, aux, logs)

    def last_decoder_layer(self) -> nn.Parameter:
        """Weight of the decoder's output conv: the layer of the adaptive GAN weight (Esser et al. 2021)."""
        if self.decoder is None:
            raise ValueError("the identity autoencoder has no decoder (nothing to train)")
        return self.decoder.conv_out.weight

    # ------------------------------------------------------------------------------ identity & files

    def config_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **to_dict(self.config)}

    def hash(self) -> str:
        """SHA-256 over the canonical config JSON and every state-dict tensor (name, dtype, shape, bytes).

        Keys a latent cache to the exact autoencoder; identical after save_pretrained/from_pretrained."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.config_dict(), sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def save_pretrained(self, path: str | Path, ema_state: dict[str, torch.Tensor] | None = None) -> Path:
        return save_model_folder(path, self.config_dict(), self.state_dict(), ema_state)

    @classmethod
    def from_pretrained(cls, path: str | Path, weights: str = "auto") -> Autoencoder:
        raw, state = load_model_folder(path, weights)
        config = config_from_dict(raw, source=Path(path) / "config.json")
        model = cls(config)
        load_state_checked(model, state, Path(path))
        return model


def config_from_dict(raw: dict, source: str | Path = "config") -> AutoencoderConfig:
    """Parse a saved `config.json` dict, checking its format tag and version."""
    raw = dict(raw)
    fmt, version = raw.pop("format", None), raw.pop("version", None)
    if fmt != FORMAT:
        raise CheckpointError(
            f"{source}: 'format' is {fmt!r}, expected {FORMAT!r} (not a latentdiff autoencoder)"
        )
    if version != VERSION:
        raise CheckpointError(f"{source}: 'version' {version!r} is not supported (this code reads {VERSION})")
    try:
        return from_dict(AutoencoderConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """load_state_dict(strict) with an error that names the checkpoint and the offending keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if wrong:
            details.append(
                "shape mismatch "
                + ", ".join(
                    f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in wrong[:5]
                )
            )
        raise CheckpointError(f"{source}: weights do not match the config: {'; '.join(details)}")
    model.load_state_dict(state, strict=True)
