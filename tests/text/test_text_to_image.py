"""Text-to-image: token ids in the latent cache, one caption drawn per step, caption dropout at its rate,
negative prompts as the unconditional branch of guidance, and a tiny model trained and sampled from the
command line on a captioned folder."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image
from tiny_text import TINY_TEXT_UNET

from latentdiff.autoencoder.config import AutoencoderConfig
from latentdiff.autoencoder.model import Autoencoder
from latentdiff.cli import main
from latentdiff.data.dataset import ArrayImageDataset
from latentdiff.data.latent_cache import encode_dataset
from latentdiff.diffusion.config import DiffusionConfig
from latentdiff.nets import UNet, UNetConfig
from latentdiff.pipeline import LatentDiffusionPipeline
from latentdiff.text import TextConditioned, TextEncoder, TextEncoderConfig, train_tokenizer
from latentdiff.training.batching import BatchRandom
from latentdiff.training.diffusion_task import DiffusionTask

CAPTIONS = [["a red circle", "red circle, top"], ["a blue star"], [], ["green square", "a green box", "box"]]


def _model(max_length: int = 8) -> TextConditioned:
    tok = train_tokenizer([c for cs in CAPTIONS for c in cs] + ["yellow", "purple"], 200, max_length)
    torch.manual_seed(0)
    enc = TextEncoder(
        TextEncoderConfig(width=16, layers=1, heads=2, vocab_size=tok.vocab_size, max_length=max_length)
    )
    unet = UNet(
        UNetConfig(
            in_channels=1, out_channels=1, sample_size=4, base_channels=16, channel_mult=(1, 2),
            num_res_blocks=1, attention_levels=(1,), head_channels=8, groups=4, cross_attention_dim=16,
        )
    )  # fmt: skip
    return TextConditioned(unet, enc, tok).eval()


def _dataset(n_copies: int = 1) -> ArrayImageDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4 * n_copies, 1, 4, 4), dtype=np.uint8)
    ds = ArrayImageDataset(images, np.zeros(len(images), np.int64), name="tiny")
    ds.captions = [list(c) for c in CAPTIONS] * n_copies
    return ds


def test_latent_cache_stores_token_ids_per_caption(tmp_path):
    model = _model()
    ae = Autoencoder(AutoencoderConfig(kind="identity", in_channels=1, latent_channels=1))
    cache = encode_dataset(
        ae, _dataset(), tmp_path / "cache", flip=True, progress=False, tokenizer=model.tokenizer
    )
    assert cache.has_text and cache.tokenizer_hash == model.tokenizer.hash() and len(cache) == 8
    _, _, cond = cache.get_batch([0, 2, 3, 7])
    assert cond["text"].shape == (4, 3, 8) and cond["text_count"].tolist() == [2, 0, 3, 3]
    assert torch.equal(cond["text"][0, :2], model.tokenizer.encode(CAPTIONS[0]))
    assert torch.equal(cond["text"][2], model.tokenizer.encode(CAPTIONS[3]))
    assert cache.captions()[7] == CAPTIONS[3]  # flipped rows keep their image's captions


def _task(model: TextConditioned, rate: float) -> DiffusionTask:
    """Only what drawing captions and dropping them needs (no autoencoder, cache or schedule)."""
    task = DiffusionTask.__new__(DiffusionTask)
    task.model, task.cond_keys, task.cond_dropout = model, ("text",), {"text": rate}
    return task


def test_one_caption_drawn_per_row_and_caption_dropout_at_its_rate():
    model = _model()
    tok = model.tokenizer
    n, rate = 6000, 0.3
    per_row = [tok.encode(c) if c else torch.full((0, 8), tok.pad_id) for c in CAPTIONS]
    k = max(len(c) for c in per_row)
    choices = torch.stack([torch.cat([c, torch.full((k - len(c), 8), tok.pad_id)]) for c in per_row])
    rows = torch.arange(n) % 4
    cond = {"text": choices[rows], "text_count": torch.tensor([2, 1, 0, 3])[rows]}
    task = _task(model, rate)
    rng = BatchRandom(7, 3, torch.arange(n), n)
    drawn = task.drawn_captions(cond, rng)["text"]
    null = tok.encode([""])[0]
    for row, options in enumerate(per_row):
        picked = drawn[rows == row]
        if not len(options):
            assert (picked == null).all(), "an uncaptioned image trains with the empty caption"
            continue
        shares = torch.stack([(picked == o).all(1).float().mean() for o in options])
        assert shares.sum() == 1 and (shares - 1 / len(options)).abs().max() < 0.05, shares
    dropped = task.dropped_condition({"text": drawn}, BatchRandom(7, 4, torch.arange(n), n))["text"]
    was_null = (drawn == null).all(1)
    now_null = (dropped == null).all(1)
    share = now_null[~was_null].float().mean().item()
    assert abs(share - rate) < 4 * (rate * (1 - rate) / int((~was_null).sum())) ** 0.5, share
    assert torch.equal(dropped[~now_null], drawn[~now_null]), "rows kept keep their caption"


class _GuidedByHand(torch.nn.Module):
    """F_u + w (F_c − F_u) with F_c from the prompt and F_u from the negative prompt, run as an
    unconditional model: the classifier-free guidance formula written out."""

    cond_keys = ()

    def __init__(self, model: TextConditioned, prompt: torch.Tensor, negative: torch.Tensor, w: float):
        super().__init__()
        self.model, self.prompt, self.negative, self.w = model, prompt, negative, w

    @property
    def config(self):
        return self.model.config

    def config_dict(self):
        return self.model.config_dict()

    def forward(self, x, c_noise, cond=None):
        f_c = self.model(x, c_noise, {"text": self.prompt.expand(len(x), -1)})
        f_u = self.model(x, c_noise, {"text": self.negative.expand(len(x), -1)})
        return f_u + self.w * (f_c - f_u)


def test_guidance_with_a_negative_prompt_is_the_formula_with_it_as_unconditional():
    model = _model()
    with torch.no_grad():  # a model whose text matters: random weights everywhere
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ae = Autoencoder(AutoencoderConfig(kind="identity", in_channels=1, latent_channels=1))
    diffusion = DiffusionConfig()
    pipe = LatentDiffusionPipeline(ae, model, diffusion, device="cpu")
    pipe.progress = False
    kw = dict(num_images=3, steps=4, sampler="ddim", seed=5, output_type="pt")
    got = pipe(prompt="a red circle", negative_prompt="a blue star", guidance_scale=3.0, **kw)
    ids = model.tokenizer.encode(["a red circle", "a blue star"])
    by_hand = LatentDiffusionPipeline(
        ae, _GuidedByHand(model, ids[:1], ids[1:], 3.0), diffusion, device="cpu"
    )
    by_hand.progress = False
    # one batched forward of cond + uncond against two separate ones: float rounding, amplified by w
    torch.testing.assert_close(got, by_hand(**kw), rtol=0, atol=1e-4)
    with_null = pipe(prompt="a red circle", guidance_scale=3.0, **kw)
    assert (with_null - got).abs().max() > 1e-3, "the negative prompt replaced the empty one"
    with pytest.raises(ValueError, match="not text-conditioned"):
        LatentDiffusionPipeline(ae, model.backbone, diffusion, device="cpu")(
            prompt="x", num_images=1, steps=1
        )


def _captioned_folder(root, n: int = 48) -> None:
    """Grey 8×8 images: a bright square on the left or on the right, captioned by where it is; the
    metadata.jsonl convention for half of them and NAME.txt sidecars for the rest."""
    root.mkdir(parents=True)
    lines = []
    for i in range(n):
        img = np.zeros((8, 8), np.uint8)
        side = "left" if i % 2 else "right"
        img[2:6, (0 if side == "left" else 4) : (4 if side == "left" else 8)] = 200 + i
        Image.fromarray(img).save(root / f"img{i:03d}.png")
        captions = [f"a square on the {side}", f"{side} square"]
        if i % 4 < 2:
            lines.append(json.dumps({"file_name": f"img{i:03d}.png", "text": captions}))
        else:
            (root / f"img{i:03d}.txt").write_text("\n".join(captions))
    (root / "metadata.jsonl").write_text("\n".join(lines))


def test_tiny_text_model_trains_and_samples_from_the_cli(tmp_path, tiny_run, capsys):
    data = tmp_path / "captioned"
    _captioned_folder(data)
    run = tmp_path / "run"
    tiny_unet = TINY_TEXT_UNET
    argv = ["-q", "train-diffusion", "--data", str(data), "--out", str(run), "--autoencoder"]
    argv += [str(tiny_run / "autoencoder"), "--steps", "4", "--batch-size", "8", *tiny_unet]
    assert main(argv) == 0, capsys.readouterr().err
    assert (run / "tokenizer.json").is_file() and (run / "text_encoder" / "model.safetensors").is_file()
    unet_cfg = json.loads((run / "unet" / "config.json").read_text())
    assert unet_cfg["cross_attention_dim"] == 16 and unet_cfg["num_classes"] == 0
    # a resume goes through the checkpoint's two halves (unet/ and text_encoder/) and changes nothing
    unet_before = (run / "unet" / "model.safetensors").read_bytes()
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    assert (run / "unet" / "model.safetensors").read_bytes() == unet_before
    pipe = LatentDiffusionPipeline.from_pretrained(run, device="cpu")
    assert pipe.takes_text
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a square on the left\n\nright square\n")
    out = tmp_path / "samples"
    argv = ["-q", "sample", str(run), "--prompts-file", str(prompts), "--num-images", "2", "--steps", "2"]
    argv += ["--guidance", "2", "--negative-prompt", "a square on the right", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("sample_*.png")) == [
        "sample_0000_0000.png", "sample_0000_0001.png", "sample_0001_0000.png", "sample_0001_0001.png",
    ]  # fmt: skip
    assert (out / "grid.png").is_file() and "right square" in (out / "prompts.txt").read_text()
    # the same images as the library makes for the same prompts and seed
    expected = pipe(
        num_images=4, steps=2, guidance_scale=2.0, seed=0, output_type="np",
        negative_prompt="a square on the right", prompt=["a square on the left"] * 2 + ["right square"] * 2,
    )  # fmt: skip
    written = np.asarray(Image.open(out / "sample_0001_0001.png"))
    assert np.array_equal(written.reshape(expected[3].shape), expected[3])
    img = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    argv = ["-q", "img2img", str(run), "--input", str(img), "--prompt", "left square", "--steps", "2"]
    assert main([*argv, "--out", str(tmp_path / "edit")]) == 0, capsys.readouterr().err
    assert main(["-q", "export-diffusers", str(run), "--out", str(tmp_path / "exp")]) == 0
    theirs = UNet2DConditionModel.from_pretrained(tmp_path / "exp" / "unet")
    ids = pipe.backbone.encode_prompts(["left square", "a square on the right"])
    emb, mask = pipe.backbone.text_encoder(ids)
    x = torch.randn(2, *pipe.latent_shape)
    with torch.no_grad():
        expected = theirs(x, torch.tensor([3.0, 500.0]), emb, encoder_attention_mask=mask.float()).sample
        torch.testing.assert_close(
            pipe.backbone(x, torch.tensor([3.0, 500.0]), {"text": ids}), expected, atol=1e-5, rtol=0
        )
    bad = ["-q", "sample", str(tiny_run), "--prompt", "a cat", "--steps", "1", "--out", str(tmp_path / "x")]
    assert main(bad) != 0 and "not text-conditioned" in capsys.readouterr().err
