"""Tokenizer and text encoder: learned from captions, saved in a run folder, loaded back identically."""

import logging

import pytest
import torch

from latentdiff.nets import UNet, UNetConfig
from latentdiff.text import (
    CaptionTokenizer,
    TextConditioned,
    TextEncoder,
    TextEncoderConfig,
    load_text_conditioned,
    train_tokenizer,
)
from latentdiff.text.conditioned import ENCODER_FOLDER, merge_state, split_state

CAPTIONS = [
    "a small red circle in the top left",
    "blue square, top-right, large",
    "a green star in the center",
    "small yellow triangle at bottom left",
]


def _tokenizer(max_length: int = 12) -> CaptionTokenizer:
    return train_tokenizer(CAPTIONS * 3, vocab_size=300, max_length=max_length)


def test_tokenizer_pads_truncates_with_a_warning_and_round_trips(tmp_path, caplog):
    tok = _tokenizer()
    ids = tok.encode(["a red circle", ""])
    assert ids.shape == (2, 12) and ids.dtype == torch.long
    mask = tok.padding_mask(ids)
    assert mask[1].sum() == 2, "the empty prompt is [BOS] [EOS]: never all padding"
    assert mask[0].sum() > 2 and not mask[0, -1]
    with caplog.at_level(logging.WARNING):
        long = tok.encode([" ".join(["red circle"] * 20)])
    assert "truncated" in caplog.text and "longer than 12 tokens" in caplog.text
    assert long.shape == (1, 12) and bool(tok.padding_mask(long).all())
    tok.save(tmp_path / "tokenizer.json")
    back = CaptionTokenizer.load(tmp_path / "tokenizer.json")
    prompts = ["a small red circle", "an unseen purple hexagon!", ""]
    assert torch.equal(back.encode(prompts), tok.encode(prompts))
    assert back.hash() == tok.hash() and back.max_length == 12 and back.pad_id == tok.pad_id


def _text_model(tok: CaptionTokenizer) -> TextConditioned:
    torch.manual_seed(0)
    enc = TextEncoder(
        TextEncoderConfig(width=16, layers=1, heads=2, vocab_size=tok.vocab_size, max_length=12)
    )
    unet = UNet(
        UNetConfig(
            in_channels=2, out_channels=2, sample_size=4, base_channels=16, channel_mult=(1, 2),
            num_res_blocks=1, attention_levels=(1,), head_channels=8, groups=4, cross_attention_dim=16,
        )
    )  # fmt: skip
    return TextConditioned(unet, enc, tok).eval()


def test_text_model_round_trips_through_the_run_folder(tmp_path):
    tok = _tokenizer()
    model = _text_model(tok)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = model.state_dict()
    assert merge_state(*split_state(state)).keys() == state.keys()
    model.save_parts(tmp_path / "unet", state, None, lambda f, s, e: model.backbone.save_pretrained(f))
    tok.save(tmp_path / "tokenizer.json")
    assert (tmp_path / ENCODER_FOLDER / "config.json").is_file()
    back = load_text_conditioned(tmp_path, UNet.from_pretrained(tmp_path / "unet"))
    ids = tok.encode(["a red circle in the top left", "blue star", ""])
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            back(x, 10.0, {"text": ids}), model(x, 10.0, {"text": ids}), rtol=0, atol=0
        )
        assert not torch.allclose(model(x, 10.0, {"text": ids}), model(x, 10.0, {"text": ids.roll(1, 0)}))


def test_padding_changes_nothing():
    tok = _tokenizer()
    model = _text_model(tok)
    ids = tok.encode(["a red circle", "green star in the center"])
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        emb, mask = model.text_encoder(ids)
        out = model(x, 3.0, {"text": ids})
        # what the mask excludes, cross-attention never reads: replace the padded embeddings by anything
        junk = torch.where(mask[..., None], emb, torch.randn_like(emb) * 50)
        torch.testing.assert_close(
            model.backbone(x, 3.0, {"text_embeddings": junk, "text_mask": mask}), out, rtol=0, atol=0
        )
        # and the encoder's self-attention does not let the padding reach the real tokens either
        model.text_encoder.token_embedding.weight[tok.pad_id] += 100.0
        emb2, mask2 = model.text_encoder(ids)
        assert torch.equal(mask2, mask) and not torch.allclose(emb2[~mask], emb[~mask])
        torch.testing.assert_close(emb2[mask], emb[mask], rtol=0, atol=1e-6)
        torch.testing.assert_close(model(x, 3.0, {"text": ids}), out, rtol=0, atol=1e-6)


def test_null_is_the_empty_prompt_and_bad_ids_are_refused():
    tok = _tokenizer()
    model = _text_model(tok)
    ids = tok.encode(["a red circle", "blue star"])
    null = model.null_cond({"text": ids})["text"]
    assert torch.equal(null, tok.encode(["", ""]))
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 1.0, {"text": null}), model(x, 1.0))
    with pytest.raises(ValueError, match=r"token ids of shape \(2, 12\)"):
        model(x, 1.0, {"text": ids[:, :5]})
    with pytest.raises(ValueError, match="vocabulary"):
        model(x, 1.0, {"text": ids + 10_000})


def test_wordllama_option_loads_offline_frozen_and_round_trips(tmp_path):
    pytest.importorskip("wordllama")
    from latentdiff.io.checkpoint import load_tensors
    from latentdiff.text.wordllama import WEIGHTS, package_file, wordllama_encoder, wordllama_tokenizer

    tok = wordllama_tokenizer(max_length=10)
    ids = tok.encode(["a small red circle in the top left", ""])
    assert ids.shape == (2, 10) and tok.padding_mask(ids)[1].sum() == 1  # "<s>" alone
    enc = wordllama_encoder(layers=0, heads=4, max_length=10)
    table = load_tensors(package_file(WEIGHTS))["embedding.weight"].float()
    assert not enc.token_embedding.weight.requires_grad and torch.equal(enc.token_embedding.weight, table)
    emb, mask = enc(ids)
    assert emb.shape == (2, 10, 256) and torch.equal(emb[0, 1], table[ids[0, 1]])
    enc.save_pretrained(tmp_path / "text_encoder")
    tok.save(tmp_path / "tokenizer.json")
    back = TextEncoder.from_pretrained(tmp_path / "text_encoder")
    assert torch.equal(
        back(CaptionTokenizer.load(tmp_path / "tokenizer.json").encode(["red"]))[0],
        enc(tok.encode(["red"]))[0],
    )
