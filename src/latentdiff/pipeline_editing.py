"""What a trained LDM does besides sampling from noise, as methods of `LatentDiffusionPipeline`: img2img
(SDEdit, Meng et al. 2022, in latent space), inpainting (known latents re-noised and blended after every
step), interpolation (spherical interpolation of the initial noise, or between two prompts at one seed) and
the denoising trajectory. Each one is a start latent or a per-step callback around the pipeline's own
`_denoise`, so every sampler, guidance and conditioning works with it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from latentdiff.diffusion.samplers import sampler_timesteps
from latentdiff.text.prompt_interpolation import prompt_path

OutputType = Literal["pil", "np", "pt"]
Labels = int | str | Sequence[int | str] | torch.Tensor | None
Prompts = str | Sequence[str] | None


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) between two noise tensors; exact at the endpoints."""
    if alpha == 0.0:
        return a.clone()
    if alpha == 1.0:
        return b.clone()
    a64, b64 = a.double().flatten(), b.double().flatten()
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm())
    theta = torch.arccos(cos.clamp(-1, 1))
    if theta.abs() < 1e-6:
        out = (1 - alpha) * a64 + alpha * b64
    else:
        out = (torch.sin((1 - alpha) * theta) * a64 + torch.sin(alpha * theta) * b64) / torch.sin(theta)
    return out.reshape(a.shape).to(a.dtype)


class PipelineEditing:
    """The editing methods of `LatentDiffusionPipeline` (which provides `encode`, `decode`, `noise`,
    `conditions`, `_denoise`, `_generator`, `_rows`, `_output`, `schedule`, `device`, `autoencoder` and
    `backbone`)."""

    @torch.no_grad()
    def img2img(
        self,
        images: torch.Tensor,
        strength: float = 0.6,
        steps: int = 20,
        sampler: str = "dpmpp_2m",
        guidance_scale: float = 1.0,
        class_labels: Labels = None,
        negative_class_labels: Labels = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        output_type: OutputType = "pt",
        prompt: Prompts = None,
        negative_prompt: Prompts = None,
        guidance: str = "cfg",
    ) -> Any:
        """SDEdit in latent space: noise E(x) to the timestep of `strength` and denoise from there.
        strength 0 returns the reconstruction, 1 ignores the input. `guidance` as for `__call__`."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        g = self._generator(seed, generator)
        z0 = self.encode(images)
        skip = min(steps, round(steps * (1.0 - strength)))
        if skip == steps:
            return self._output(self.decode(z0), output_type)
        t = sampler_timesteps(sampler, self.schedule, steps)[skip]
        noise = torch.randn(z0.shape, generator=g, device=g.device).to(self.device)
        z_t = self.schedule.add_noise(z0, noise, t.expand(len(z0)).to(self.device))
        conds = self.conditions(class_labels, negative_class_labels, len(z0), prompt, negative_prompt)
        z = self._denoise(z_t, steps, sampler, guidance_scale, conds, g, start_index=skip, guidance=guidance)
        return self._output(self.decode(z), output_type)

    def latent_mask(self, mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Pixel mask (N|1, 1, H, W), 1 = regenerate, to the latent grid: a latent cell is regenerated when
        any pixel it covers is (max-pooling), so nothing masked leaks through from the known image."""
        if mask.ndim == 2:
            mask = mask[None, None]
        elif mask.ndim == 3:
            mask = mask[:, None]
        if mask.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"mask size {tuple(mask.shape[-2:])} differs from the image size {tuple(images.shape[-2:])}"
            )
        f = self.autoencoder.downsample_factor
        m = F.max_pool2d((mask.float() > 0.5).float(), f) if f > 1 else (mask.float() > 0.5).float()
        return m.expand(len(images), 1, *m.shape[-2:]).to(self.device)

    @torch.no_grad()
    def inpaint(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        steps: int = 50,
        sampler: str = "ddim",
        guidance_scale: float = 1.0,
        class_labels: Labels = None,
        negative_class_labels: Labels = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        output_type: OutputType = "pt",
        prompt: Prompts = None,
        negative_prompt: Prompts = None,
        guidance: str = "cfg",
    ) -> Any:
        """Regenerate the region where `mask` is 1 and keep the rest: after every step the known latents,
        noised to the current timestep, replace the unmasked part (the blended-latent scheme of
        Avrahami et al. 2023 and Stable Diffusion's legacy inpainting). `guidance` as for `__call__`."""
        g = self._generator(seed, generator)
        z_known = self.encode(images)
        m = self.latent_mask(mask, images)

        def blend(info: dict[str, Any]) -> torch.Tensor:
            t = torch.as_tensor(info["t"]).to(self.device).expand(len(z_known))
            noise = torch.randn(z_known.shape, generator=g, device=g.device).to(self.device)
            known_t = self.schedule.add_noise(z_known, noise, t)
            return m * info["x"] + (1 - m) * known_t

        x_T = self.noise(len(images), g, size=tuple(z_known.shape[-2:]))  # the input's own size
        conds = self.conditions(class_labels, negative_class_labels, len(images), prompt, negative_prompt)
        z = self._denoise(x_T, steps, sampler, guidance_scale, conds, g, callback=blend, guidance=guidance)
        return self._output(self.decode(z), output_type)

    @torch.no_grad()
    def interpolate(
        self,
        seed_a: int,
        seed_b: int,
        n: int = 8,
        steps: int = 20,
        sampler: str = "dpmpp_2m",
        guidance_scale: float = 1.0,
        class_labels: Labels = None,
        negative_class_labels: Labels = None,
        output_type: OutputType = "pt",
        prompt: Prompts = None,
        negative_prompt: Prompts = None,
        height: int | None = None,
        width: int | None = None,
        guidance: str = "cfg",
    ) -> Any:
        """`n` images along the great circle between the initial noise of `seed_a` and `seed_b`; the
        endpoints are what `pipe(num_images=1, seed=seed_a | seed_b)` draws (at the same `height`/`width`
        and `guidance`)."""
        if n < 2:
            raise ValueError(f"interpolate needs n >= 2, got {n}")
        size = self.latent_size(height, width)
        a = self.noise(1, torch.Generator().manual_seed(seed_a), size=size)[0]
        b = self.noise(1, torch.Generator().manual_seed(seed_b), size=size)[0]
        x_T = torch.stack([slerp(a, b, i / (n - 1)) for i in range(n)])
        conds = self.conditions(class_labels, negative_class_labels, n, prompt, negative_prompt)
        images = []
        for i in range(n):  # one at a time, with the generator state plain sampling would have
            g = torch.Generator().manual_seed(seed_a if i < n - 1 else seed_b)
            self.noise(1, g, size=size)
            one = self._rows(conds, slice(i, i + 1))
            z = self._denoise(x_T[i : i + 1], steps, sampler, guidance_scale, one, g, guidance=guidance)
            images.append(self.decode(z))
        return self._output(torch.cat(images), output_type)

    @torch.no_grad()
    def interpolate_prompts(
        self,
        prompt_a: str,
        prompt_b: str,
        n: int = 8,
        seed: int = 0,
        steps: int = 20,
        sampler: str = "dpmpp_2m",
        guidance_scale: float = 1.0,
        negative_prompt: str | None = None,
        output_type: OutputType = "pt",
    ) -> Any:
        """`n` images from `prompt_a` to `prompt_b` at one seed's noise, the encoded prompts interpolated
        (`text.prompt_interpolation`); the endpoints are `pipe(num_images=1, seed=seed, prompt=a | b, …)`."""
        if not self.takes_text:
            raise ValueError("interpolate_prompts needs a text-conditioned model (trained on captions)")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ValueError(f"interpolate_prompts needs n >= 2 images (both prompts included), got {n!r}")
        ends = [self.conditions(None, None, 1, p, negative_prompt) for p in (prompt_a, prompt_b)]
        images = []
        for model, conds in prompt_path(self.backbone, *ends, n):
            g = torch.Generator().manual_seed(seed)  # each image as plain sampling at `seed` would draw it
            x_T = self.noise(1, g)
            images.append(
                self.decode(self._denoise(x_T, steps, sampler, guidance_scale, conds, g, model=model))
            )
        return self._output(torch.cat(images), output_type)

    @torch.no_grad()
    def denoising_trajectory(
        self,
        num_images: int = 1,
        steps: int = 20,
        sampler: str = "dpmpp_2m",
        at: Sequence[int] | None = None,
        guidance_scale: float = 1.0,
        class_labels: Labels = None,
        negative_class_labels: Labels = None,
        seed: int | None = None,
        prompt: Prompts = None,
        negative_prompt: Prompts = None,
    ) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Decoded predictions of z_0 (and the current noisy latent) after the chosen step indices:
        a list of (step, x̂_0 images, z_t latents)."""
        at = sorted(set(at if at is not None else np.linspace(0, steps - 1, 5).round().astype(int).tolist()))
        g = self._generator(seed, None)
        conds = self.conditions(class_labels, negative_class_labels, num_images, prompt, negative_prompt)
        frames: list[tuple[int, torch.Tensor, torch.Tensor]] = []

        def record(info: dict[str, Any]) -> None:
            if info["i"] in at:
                frames.append((int(info["i"]), self.decode(info["x0_pred"]).cpu(), info["x"].cpu()))

        self._denoise(self.noise(num_images, g), steps, sampler, guidance_scale, conds, g, callback=record)
        return frames
