"""Entry points that train a stage into a run folder: data, model, task, trainer and the stage's
post-processing (latent statistics for Stage 1, the latent cache for Stage 2)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from latentdiff.autoencoder.model import Autoencoder
from latentdiff.autoencoder.stats import apply_latent_stats, compute_latent_stats
from latentdiff.config import to_dict
from latentdiff.data.builtin import BUILTIN
from latentdiff.data.dataset import ImageDataset
from latentdiff.data.latent_cache import LatentCache, encode_dataset
from latentdiff.data.load import data_has_captions, load_dataset
from latentdiff.diffusion.schedule import make_schedule
from latentdiff.io.checkpoint import (
    CheckpointError,
    load_model_folder,
    read_json,
    save_model_folder,
    write_json,
)
from latentdiff.nets.backbones import BACKBONES, GUIDE_FOLDER, build_backbone, find_backbone_folder
from latentdiff.text.conditioned import ENCODER_FOLDER, TextConditioned
from latentdiff.text.encoder import TextEncoder, TextEncoderConfig
from latentdiff.text.tokenizer import FILE_NAME as TOKENIZER_FILE
from latentdiff.text.tokenizer import CaptionTokenizer, train_tokenizer
from latentdiff.text.wordllama import wordllama_encoder, wordllama_tokenizer
from latentdiff.training.autoencoder_task import AutoencoderTask
from latentdiff.training.batching import mix_seed
from latentdiff.training.diffusion_task import DiffusionTask
from latentdiff.training.distributed import barrier, init_distributed
from latentdiff.training.loop import Trainer
from latentdiff.training.precision import autocast_context
from latentdiff.training.run_folder import (
    RunFolderError,
    check_batch_fits,
    check_data_fits,
    check_latent_stats,
    check_resume_autoencoder,
    check_resume_config,
    clear_stage,
    has_trained_weights,
    plan_start,
)
from latentdiff.training.run_lock import training_lock
from latentdiff.training.stages import AutoencoderStage, DataConfig, DiffusionStage, TextConfig

log = logging.getLogger(__name__)

SCHEDULER_FILE = "scheduler.json"
CLASSES_FILE = "classes.json"


# the stream each stage's initial weights are drawn from: `mix_seed(train.seed, stream)`
_INIT_STREAM = {"autoencoder": 1001, "backbone": 1002, "discriminator": 1003, "text_encoder": 1004}


@contextlib.contextmanager
def seeded_init(seed: int, module: str) -> Iterator[None]:
    """Draw initial weights built inside from the CPU generator seeded by (`seed`, `module`), then give the
    caller's global RNG back as it was: the same `--seed` gives the same initial weights, and building a
    model does not change the random numbers the caller draws afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(seed, _INIT_STREAM[module]))
        yield


def record_config(run_dir: Path, section: str, cfg: Any) -> None:
    """Merge the resolved configuration of one stage into `run_dir/config.yaml` (rank 0 only)."""
    if not init_distributed().is_main:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    data = data or {}
    data[section] = to_dict(cfg)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def load_training_data(data: DataConfig, flip: bool | None = None) -> ImageDataset:
    return load_dataset(
        data.dataset,
        data.split,
        data.resolution,
        data.channels,
        data.flip if flip is None else flip,
        data.limit,
    )


def held_out_data(data: DataConfig, train: ImageDataset) -> ImageDataset:
    """Images of the evaluation split; a dataset without one falls back to a spread of its training
    images (and says so), since an autoencoder is still worth measuring."""
    try:
        return load_dataset(
            data.dataset, data.eval_split, train.resolution, train.channels, False, data.eval_images
        )
    except (ValueError, FileNotFoundError) as e:
        log.warning(
            "no '%s' split for %s (%s): measuring on %d training images instead",
            data.eval_split,
            data.dataset,
            e,
            data.eval_images,
        )
        return load_dataset(
            data.dataset, data.split, train.resolution, train.channels, False, data.eval_images
        )


def finalize_autoencoder(
    folder: Path, data: ImageDataset, stage: AutoencoderStage, device: torch.device | str = "cpu"
) -> Autoencoder:
    """Measure the latent statistics with the weights Stage 2 will use (on the stage's device) and store
    them in the config."""
    ae = Autoencoder.from_pretrained(folder).to(device)
    stats = compute_latent_stats(ae, data, stage.stats_images, per_channel=stage.per_channel_stats)
    apply_latent_stats(ae, stats, shift=stage.shift)
    _, raw = load_model_folder(folder, weights="model")
    ema = load_model_folder(folder, weights="ema")[1] if (folder / "ema.safetensors").is_file() else None
    save_model_folder(folder, ae.config_dict(), raw, ema)
    return ae


def train_autoencoder(
    stage: AutoencoderStage,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Stage 1 into `run_dir/autoencoder/`; returns that folder.

    The run folder is locked for the whole stage (`run_lock`). A folder that already holds a trained
    autoencoder (or its checkpoints) is continued with `resume` or replaced from scratch with `overwrite`,
    never otherwise; every check runs before `config.yaml` or anything else is written (`run_folder`)."""
    run_dir = Path(run_dir)
    init_distributed(stage.train.device)
    with training_lock(run_dir):
        return _train_autoencoder(stage, run_dir, resume, progress, overwrite)


def _train_autoencoder(
    stage: AutoencoderStage, run_dir: Path, resume: bool, progress: bool, overwrite: bool
) -> Path:
    dist = init_distributed(stage.train.device)
    autocast_context(dist.device, stage.train.precision)  # e.g. fp16 on a CPU: refused before any work
    identity = stage.model.kind == "identity"  # nothing to resume: it has no training
    fresh = plan_start(run_dir, "autoencoder", run_dir / "autoencoder", resume and not identity, overwrite)
    data = load_training_data(stage.data)
    fill: dict[str, Any] = {"in_channels": data.channels, "resolution": data.resolution}
    if stage.model.kind == "identity":
        fill["latent_channels"] = data.channels
    stage = dataclasses.replace(stage, model=dataclasses.replace(stage.model, **fill))
    folder = run_dir / "autoencoder"
    with seeded_init(stage.train.seed, "autoencoder"):
        model = Autoencoder(stage.model)
    check_data_fits(model.config, data.resolution, data.channels, "being trained")
    if stage.model.kind == "identity":
        if dist.is_main:  # nothing to train: the pixel-space baseline only needs its statistics
            _start_autoencoder(run_dir, stage, fresh)
            model.save_pretrained(folder)
            finalize_autoencoder(folder, data, stage, dist.device)
        barrier()
        return folder
    eval_data = held_out_data(stage.data, data)
    with seeded_init(stage.train.seed, "discriminator"):
        task = AutoencoderTask(model, stage.loss, data, eval_data)
    trainer = Trainer(task, stage.train, run_dir, progress=progress)
    check_batch_fits(task.num_items(), stage.train.batch_size, stage.train.seed)
    if resume:
        check_resume_config(run_dir, "autoencoder", model.config_dict())
    if dist.is_main:
        _start_autoencoder(run_dir, stage, fresh)
    barrier()
    trainer.fit(resume=resume)
    if dist.is_main:
        finalize_autoencoder(folder, data, stage, dist.device)
    barrier()
    return folder


def _start_autoencoder(run_dir: Path, stage: AutoencoderStage, fresh: bool) -> None:
    """The first writes of Stage 1, once every check has passed (rank 0)."""
    if fresh:
        clear_stage(run_dir, "autoencoder", run_dir / "autoencoder")
        backbone = find_backbone_folder(run_dir)
        if backbone is not None:
            log.warning(
                "%s was trained on the autoencoder being replaced: sampling refuses the pair until it is "
                "trained again (train-diffusion --overwrite)",
                backbone,
            )
    record_config(run_dir, "autoencoder_stage", stage)


def _copy_autoencoder(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    config, state = load_model_folder(src, weights="model")
    ema = load_model_folder(src, weights="ema")[1] if (src / "ema.safetensors").is_file() else None
    save_model_folder(dst, config, state, ema)


def prepare_latents(
    ae: Autoencoder,
    ae_hash: str,
    stage: DiffusionStage,
    run_dir: Path,
    latents: str | Path | None,
    device: torch.device,
    progress: bool = True,
    autoencoder_folder: str | Path = "autoencoder",
    tokenizer: CaptionTokenizer | None = None,
    data: ImageDataset | None = None,
) -> LatentCache:
    """The latent cache Stage 2 trains on: the given one (checked against the autoencoder), else
    `run_dir/latents`, encoded now unless a cache made by this same autoencoder is already there (the data
    is checked against the autoencoder, named `autoencoder_folder` in errors, before encoding). `ae_hash` is
    `ae.hash()`, which the caller has already computed. With a `tokenizer`, the cache holds the captions'
    token ids and is reused only when made with that same tokenizer; `data` is the (unflipped) training
    data when the caller has already loaded it."""
    wanted_text = None if tokenizer is None else tokenizer.hash()
    if latents is not None:
        cache = LatentCache(latents)
        cache.check_autoencoder(ae_hash)
        if cache.tokenizer_hash != wanted_text:
            what = "no captions" if wanted_text is None else "the token ids of this run's tokenizer"
            raise ValueError(f"the latent cache {cache.path} does not hold {what}: encode it again")
        return cache
    path = run_dir / "latents"
    if (path / "cache.json").is_file():
        cache = LatentCache(path)
        from_folder = stage.data.dataset.lower() not in BUILTIN
        if from_folder and "split_rule" not in cache.meta["dataset"]:
            log.info("the latent cache %s predates the held-out split of folders: encoding again", path)
        elif cache.autoencoder_hash == ae_hash and cache.tokenizer_hash == wanted_text:
            log.info("reusing the latent cache %s", path)
            return cache
        elif cache.autoencoder_hash == ae_hash:
            log.info("the latent cache %s holds other captions' token ids: encoding again", path)
        else:
            log.info("the latent cache %s belongs to another autoencoder: encoding again", path)
    data = data if data is not None else load_training_data(stage.data, flip=False)
    check_data_fits(ae.config, data.resolution, data.channels, autoencoder_folder)
    rows = len(data) * (2 if stage.data.flip else 1)
    check_batch_fits(rows, stage.train.batch_size, stage.train.seed)  # before minutes of encoding
    return encode_dataset(
        ae,
        data,
        path,
        stage.encode_batch_size,
        flip=stage.data.flip,
        device=device,
        progress=progress,
        tokenizer=tokenizer,
    )


def wants_text(stage: DiffusionStage) -> bool:
    """Whether Stage 2 is text-conditioned: `conditional` "text", or "auto" on data with captions."""
    if stage.conditional == "text":
        return True
    return stage.conditional == "auto" and data_has_captions(stage.data.dataset, stage.data.split)


def prepare_text(
    stage: DiffusionStage, run_dir: Path, resume: bool
) -> tuple[CaptionTokenizer, ImageDataset | None]:
    """The tokenizer of a text-conditioned Stage 2: the run's `tokenizer.json` on a resume, else learned
    from the training captions (or wordllama's); and the training data when it had to be loaded for it."""
    saved = run_dir / TOKENIZER_FILE
    if resume and saved.is_file():
        return CaptionTokenizer.load(saved), None
    if stage.text.encoder == "wordllama":
        return wordllama_tokenizer(stage.text.max_length), None
    data = load_training_data(stage.data, flip=False)
    if not data.captions or not any(data.captions):
        raise ValueError(
            f"conditional=text, but {stage.data.dataset} has no captions (metadata.jsonl or NAME.txt beside "
            "each image; see docs/architecture.md)"
        )
    captions = [text for texts in data.captions for text in texts]
    return train_tokenizer(captions, stage.text.vocab_size, stage.text.max_length), data


def build_text_encoder(text: TextConfig, tokenizer: CaptionTokenizer) -> TextEncoder:
    if text.encoder == "wordllama":
        return wordllama_encoder(text.layers, text.heads, tokenizer.max_length)
    cfg = TextEncoderConfig(
        kind="trained",
        width=text.width,
        layers=text.layers,
        heads=text.heads,
        vocab_size=tokenizer.vocab_size,
        max_length=tokenizer.max_length,
        pad_id=tokenizer.pad_id,
    )
    return TextEncoder(cfg)


def check_backbone_sections(stage: DiffusionStage) -> None:
    """A changed section of a backbone that is not chosen is refused: it would do nothing."""
    defaults = DiffusionStage()
    for name in BACKBONES:
        if name != stage.backbone and to_dict(getattr(stage, name)) != to_dict(getattr(defaults, name)):
            raise ValueError(
                f"settings under '{name}.' apply to backbone={name}, but backbone={stage.backbone}"
            )


def backbone_config(stage: DiffusionStage, channels: int, size: int, num_classes: int) -> Any:
    """The chosen backbone's section with the shapes of the latents filled in."""
    fill = {"in_channels": channels, "out_channels": channels, "sample_size": size}
    return dataclasses.replace(getattr(stage, stage.backbone), **fill, num_classes=num_classes)


def train_diffusion(
    stage: DiffusionStage,
    run_dir: str | Path,
    autoencoder: str | Path | None = None,
    latents: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    folder: str | None = None,
) -> Path:
    """Stage 2 into `run_dir/<backbone>/` (or `run_dir/<folder>/`: the autoguidance guide, a second, weaker
    backbone trained on the same latents with the run's noise schedule, `guide/`; see `pipeline`). The
    autoencoder (default `run_dir/autoencoder`) is copied into the run folder so that it alone holds
    everything needed to sample, once every check has passed; the backbone records that autoencoder's
    hash (`io.autoencoder_record`).

    The run folder is locked for the whole stage. A trained backbone (or its checkpoints) is continued
    with `resume` or replaced from scratch with `overwrite`, never otherwise; so is an autoencoder in the
    run folder other than `autoencoder`. An autoencoder whose latent statistics were never measured is
    refused."""
    run_dir = Path(run_dir)
    check_backbone_sections(stage)
    init_distributed(stage.train.device)
    with training_lock(run_dir):
        return _train_diffusion(stage, run_dir, autoencoder, latents, resume, progress, overwrite, folder)


def _check_guide_folder(folder: str, what: str) -> None:
    if folder in BACKBONES or folder in ("autoencoder", ENCODER_FOLDER, "latents", "trainer_state"):
        raise ValueError(f"{what}={folder!r} is a run folder's own part; a guide goes to {GUIDE_FOLDER!r}")


def _check_snapshot(stage: DiffusionStage) -> None:
    """An earlier EMA of the model kept as its guide (`TrainConfig.snapshot_fraction`) must not land on a part
    of the run folder, and a text-conditioned model has no guide."""
    if not stage.train.snapshot_fraction:
        return
    _check_guide_folder(stage.train.snapshot_folder, "train.snapshot_folder")
    if wants_text(stage):
        raise ValueError(
            "train.snapshot_fraction: a guide for a text-conditioned model is not supported (it needs its "
            "own text encoder)"
        )


def _check_guide(stage: DiffusionStage, run_dir: Path, folder: str) -> None:
    """A guide is trained after the run's model, on its latents, with its noise schedule and preconditioning
    (autoguidance combines the two networks' outputs: they must mean the same thing)."""
    _check_guide_folder(folder, "folder")
    if find_backbone_folder(run_dir) is None or not (run_dir / SCHEDULER_FILE).is_file():
        raise RunFolderError(f"{run_dir} has no trained backbone yet: train it before its guide")
    if wants_text(stage):
        raise ValueError(
            "a guide for a text-conditioned model is not supported (it needs its own text encoder)"
        )
    saved, wanted = read_json(run_dir / SCHEDULER_FILE), to_dict(stage.diffusion)
    differing = [f"{k}: run {saved.get(k)!r}, guide {v!r}" for k, v in wanted.items() if saved.get(k) != v]
    if differing:
        raise ValueError(
            f"the guide's diffusion settings differ from the run's ({run_dir / SCHEDULER_FILE}): "
            + "; ".join(differing)
        )


def _train_diffusion(
    stage: DiffusionStage,
    run_dir: Path,
    autoencoder: str | Path | None,
    latents: str | Path | None,
    resume: bool,
    progress: bool,
    overwrite: bool,
    folder: str | None = None,
) -> Path:
    dist = init_distributed(stage.train.device)
    if folder is not None:
        _check_guide(stage, run_dir, folder)
    _check_snapshot(stage)
    name = folder or stage.backbone
    autocast_context(dist.device, stage.train.precision)  # e.g. fp16 on a CPU: refused before any work
    existing = find_backbone_folder(run_dir) if run_dir.is_dir() else None
    if existing is not None and existing.name != stage.backbone:
        raise ValueError(
            f"{run_dir} already holds a trained {existing.name} ({existing}); train the {stage.backbone} "
            "into another run folder"
        )
    ae_src = Path(autoencoder) if autoencoder is not None else run_dir / "autoencoder"
    if not (ae_src / "config.json").is_file():
        raise CheckpointError(
            f"no autoencoder at {ae_src}: train one with `latentdiff train-autoencoder --out {run_dir}` "
            "or pass --autoencoder DIR"
        )
    fresh = plan_start(run_dir, name, run_dir / name, resume, overwrite)
    ae = Autoencoder.from_pretrained(ae_src).to(dist.device).eval()
    check_latent_stats(ae.config, ae_src)
    ae_hash = ae.hash()
    if resume:
        check_resume_autoencoder(run_dir, name, ae_src, ae_hash)
    ae_dst = run_dir / "autoencoder"
    copy_ae = ae_src.resolve() != ae_dst.resolve()
    if copy_ae and not overwrite and has_trained_weights(ae_dst):
        if Autoencoder.from_pretrained(ae_dst).hash() == ae_hash:
            copy_ae = False  # the same autoencoder is already there
        else:
            raise RunFolderError(
                f"{ae_dst} holds another trained autoencoder than {ae_src}: pass --overwrite to replace it "
                "(and any backbone trained on it), or train into another --out folder"
            )
    text = wants_text(stage)
    if not text and to_dict(stage.text) != to_dict(TextConfig()):
        raise ValueError("settings under 'text.' apply to a text-conditioned model (captioned data)")
    tokenizer, data = prepare_text(stage, run_dir, resume) if text else (None, None)
    cache = prepare_latents(
        ae, ae_hash, stage, run_dir, latents, dist.device, progress, ae_src, tokenizer=tokenizer, data=data
    )
    # a VQ cache stores (h, w) code indices; the backbone sees the looked-up code vectors
    c, h, w = (ae.latent_channels, *cache.latent_shape) if cache.kind == "vq" else cache.latent_shape
    modes = {"auto": not text and cache.num_classes > 1, "yes": True, "no": False, "text": False}
    use_labels = modes[stage.conditional]
    if use_labels and cache.num_classes < 1:
        raise ValueError(f"conditional=yes, but the latent cache {cache.path} holds no class labels")
    net_cfg = backbone_config(stage, c, h, cache.num_classes if use_labels else 0)
    if tokenizer is not None:
        with seeded_init(stage.train.seed, "text_encoder"):
            encoder = build_text_encoder(stage.text, tokenizer)
        net_cfg = dataclasses.replace(net_cfg, cross_attention_dim=encoder.width)
    stage = dataclasses.replace(stage, **{stage.backbone: net_cfg})
    with seeded_init(stage.train.seed, "backbone"):
        backbone = build_backbone(stage.backbone, net_cfg)
    model = backbone if tokenizer is None else TextConditioned(backbone, encoder, tokenizer)
    task = DiffusionTask(
        model,
        ae,
        cache,
        make_schedule(stage.diffusion),
        stage.diffusion,
        stage.cond_dropout,
        stage.sample_sampler,
        stage.sample_steps,
        stage.sample_guidance,
        name=name,
        autoencoder_hash=ae_hash,
    )
    trainer = Trainer(task, stage.train, run_dir, progress=progress)
    check_batch_fits(task.num_items(), stage.train.batch_size, stage.train.seed)
    if resume:
        check_resume_config(run_dir, name, backbone.config_dict())
    if dist.is_main and folder is not None:
        if fresh:
            clear_stage(run_dir, name, run_dir / name)
        record_config(run_dir, f"{folder}_stage", stage)
    elif dist.is_main:  # every check has passed: now the run folder changes
        if fresh or (copy_ae and overwrite):
            clear_stage(run_dir, stage.backbone, run_dir / stage.backbone)
            clear_stage(run_dir, GUIDE_FOLDER, run_dir / GUIDE_FOLDER)  # the replaced model's guide
            shutil.rmtree(run_dir / ENCODER_FOLDER, ignore_errors=True)  # a text model's other half
            (run_dir / TOKENIZER_FILE).unlink(missing_ok=True)
        if tokenizer is not None:
            tokenizer.save(run_dir / TOKENIZER_FILE)
        if copy_ae:
            _copy_autoencoder(ae_src, ae_dst)
        record_config(run_dir, "diffusion_stage", stage)
        write_json(to_dict(stage.diffusion), run_dir / SCHEDULER_FILE)
        write_json(cache.class_names if use_labels else [], run_dir / CLASSES_FILE)
    barrier()
    trainer.fit(resume=resume)
    return run_dir / name
