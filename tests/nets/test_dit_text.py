"""Text conditioning of the DiT: cross-attention in every block, silent at initialisation, padding-blind."""

import pytest
import torch

from latentdiff.nets.dit import DiT, DiTConfig
from latentdiff.nets.dit_diffusers_format import save_diffusers_dit
from latentdiff.nets.unet_diffusers_format import DiffusersFormatError


def _text(batch: int = 2, length: int = 6, width: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.arange(length)[None] < torch.tensor([length, 2])[:batch, None]
    return {"text_embeddings": torch.randn(batch, length, width, generator=g), "text_mask": mask}


def test_text_dit_starts_as_the_identity_then_reads_the_text_but_not_its_padding():
    torch.manual_seed(0)
    dit = DiT(DiTConfig.preset("tiny", in_channels=2, out_channels=2, sample_size=4, cross_attention_dim=12))
    x = torch.randn(2, 2, 4, 4)
    a, b = _text(), _text()
    b["text_embeddings"] = torch.randn_like(b["text_embeddings"])
    with torch.no_grad():
        for p in dit.parameters():  # leave the zero-initialised start behind: every weight shapes the output
            p.add_(0.05 * torch.randn_like(p))
        out = dit(x, 5.0, a)
        assert not torch.allclose(out, dit(x, 5.0, b)), "the text reaches the output"
        padded = ~a["text_mask"]
        junk = {**a, "text_embeddings": torch.where(padded[..., None], 99.0, a["text_embeddings"])}
        torch.testing.assert_close(dit(x, 5.0, junk), out, rtol=0, atol=0)
    fresh = DiT(
        DiTConfig.preset("tiny", in_channels=2, out_channels=2, sample_size=4, cross_attention_dim=12)
    )
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, 5.0, a), fresh(x, 5.0, b), rtol=0, atol=0)  # zero-initialised


def test_text_dit_round_trips_and_refuses_diffusers_export(tmp_path):
    cfg = DiTConfig.preset("tiny", in_channels=2, out_channels=2, sample_size=4, cross_attention_dim=12)
    dit = DiT(cfg).eval()
    dit.save_pretrained(tmp_path / "dit")
    back = DiT.from_pretrained(tmp_path / "dit")
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(back(x, 1.0, _text()), dit(x, 1.0, _text()), rtol=0, atol=0)
    with pytest.raises(ValueError, match="text_embeddings"):
        dit(x, 1.0)
    with pytest.raises(DiffusersFormatError, match="text-conditioned DiT"):
        save_diffusers_dit(dit, tmp_path / "exp")
