"""The one training loop used by both stages.

AdamW with linear warm-up, gradient clipping and accumulation, EMA of the weights, optional bf16 autocast
(fp16 with a grad scaler on CUDA only), periodic atomic checkpoints with `keep_last`, exact resume,
DistributedDataParallel under `torchrun`, a tqdm bar, TensorBoard scalars and image grids, and a guard
that stops on a non-finite loss or gradient while keeping the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from latentdiff.config import to_dict
from latentdiff.io.checkpoint import CheckpointError, load_tensors
from latentdiff.io.images import make_grid, save_grid
from latentdiff.training import trainer_state as ckpt
from latentdiff.training.batching import BatchRandom, GlobalBatchSampler, mix_seed
from latentdiff.training.config import TrainConfig
from latentdiff.training.distributed import (
    DistInfo,
    PeerLost,
    all_reduce_mean,
    barrier,
    init_distributed,
    is_peer_failure,
)
from latentdiff.training.ema import EMA
from latentdiff.training.interrupt import StopOnInterrupt
from latentdiff.training.precision import autocast_context
from latentdiff.training.task import TrainTask

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN/inf; the message names the step and the last good checkpoint."""


class Trainer:
    """Runs `task` for `cfg.steps` optimiser steps, writing into `run_dir`."""

    def __init__(
        self,
        task: TrainTask,
        cfg: TrainConfig,
        run_dir: str | Path,
        extra_config: dict[str, Any] | None = None,
        progress: bool = True,
    ) -> None:
        # a private copy: fitting the step count to a time budget must not touch the caller's config
        cfg = dataclasses.replace(cfg)
        self.task, self.cfg, self.run_dir = task, cfg, Path(run_dir)
        self.configured_steps = cfg.steps  # a time-budgeted run's placeholder cap until its first fit
        self.extra_config = extra_config or {}
        self.progress = progress
        self.dist: DistInfo = init_distributed(cfg.device)
        self.device = self.dist.device
        autocast_context(self.device, cfg.precision)  # fail fast on fp16 + CPU
        world, accum = self.dist.world_size, cfg.grad_accum
        if cfg.batch_size % (world * accum):
            raise ValueError(
                f"train.batch_size {cfg.batch_size} must be divisible by "
                f"processes × grad_accum = {world * accum}"
            )
        self.micro_batch = cfg.batch_size // (world * accum)
        self.ckpt_root = ckpt.checkpoint_root(self.run_dir, task.name)
        self.history: list[dict[str, float]] = []

        task.model.to(self.device)
        self.modules: dict[str, nn.Module] = {"model": task.model}
        specs = {}
        for name, (module, spec) in task.extra_modules().items():
            module.to(self.device)
            self.modules[name], specs[name] = module, spec
        self.wrapped = {name: self._wrap(m) for name, m in self.modules.items()}
        self.optimizers = {name: self._optimizer(m, specs.get(name)) for name, m in self.modules.items()}
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, cfg.lr_multiplier)
            for name, opt in self.optimizers.items()
        }
        self.ema = EMA(task.model, cfg.ema_decay, cfg.ema_warmup)
        use_scaler = cfg.precision == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.step = 0
        # minutes trained before the last resume: a time budget (max_minutes) counts them too
        self.minutes_before = 0.0
        self._fit_start = time.perf_counter()

    # ------------------------------------------------------------------------------------------- set-up
    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.dist.enabled or not any(p.requires_grad for p in module.parameters()):
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        # No buffer broadcast: the PatchGAN's BatchNorm runs twice per step (generator and discriminator
        # losses), and DDP's in-place copy of rank 0's running stats before the second forward bumps the
        # version of tensors CUDA's batch norm saved for backward ("modified by an inplace operation", seen on
        # an H200). In training mode BatchNorm normalises with batch statistics, so running stats that differ
        # per rank change no gradient; the checkpoint keeps rank 0's.
        return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    def _optimizer(self, module: nn.Module, spec) -> torch.optim.Optimizer:
        cfg = self.cfg
        lr = spec.lr if spec and spec.lr is not None else cfg.lr
        betas = spec.betas if spec and spec.betas is not None else cfg.betas
        wd = spec.weight_decay if spec and spec.weight_decay is not None else cfg.weight_decay
        params = [p for p in module.parameters() if p.requires_grad]
        # the fused kernel updates all tensors in one pass (CPU and CUDA): measurably faster than foreach here
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd, fused=True)

    # ------------------------------------------------------------------------------------- checkpoints
    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "world_size": self.dist.world_size,
            "num_items": self.task.num_items(),
            "ema_updates": self.ema.num_updates,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": ckpt.capture_rng(),
            "train_config": to_dict(self.cfg),
            "minutes_trained": self.minutes_before + (time.perf_counter() - self._fit_start) / 60,
            "history": self.history[-2000:],
        }

    def save_checkpoint(self) -> Path | None:
        barrier()
        folder = self.ckpt_root / f"step_{self.step:08d}"
        if self.dist.is_main:
            model_state = self.task.model.state_dict()
            ema_state = self.ema.state_dict()
            extra = {k: m.state_dict() for k, m in self.modules.items() if k != "model"}
            ckpt.write_checkpoint(
                folder,
                lambda p: self.task.save_model(p, model_state, ema_state),
                extra,
                self._trainer_state(),
            )
            self.task.save_model(self.run_dir / self.task.name, model_state, ema_state)
            ckpt.prune_checkpoints(self.ckpt_root, self.cfg.keep_last)
            log.info("checkpoint written: %s", folder)
        barrier()
        return folder

    def resume(self, folder: Path | None = None) -> bool:
        """Load the latest (or the given) checkpoint; returns False when there is none."""
        folder = folder or ckpt.latest_checkpoint(self.ckpt_root)
        if folder is None:
            return False
        state, extra = ckpt.read_checkpoint(folder)
        try:
            weights = getattr(self.task, "checkpoint_weights", None)  # a task that saves its model in parts
            if weights is not None:
                model_state, ema_state = weights(folder / "model")
            else:
                model_state = load_tensors(folder / "model" / "model.safetensors")
                ema_state = load_tensors(folder / "model" / "ema.safetensors")
            self.task.model.load_state_dict(model_state)
            self.ema.load_state_dict(ema_state, state["ema_updates"])
            for name, sd in extra.items():
                self.modules[name].load_state_dict(sd)
        except (RuntimeError, KeyError) as e:
            raise CheckpointError(
                f"cannot resume from {folder}: its weights do not fit the configured model ({e}). "
                "Resume with the configuration the run was started with (see config.yaml in the run folder)."
            ) from e
        for name, opt in self.optimizers.items():
            ckpt.load_optimizer_state(opt, state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        ckpt.restore_rng(state["rng"])
        self.history = list(state.get("history", []))
        self.step = int(state["step"])
        if self.cfg.fit_to_time and self.cfg.max_minutes > 0:
            # a time-budgeted run keeps the step count it was fitted to and the time it has used: resuming
            # a finished one trains nothing, an interrupted one finishes its schedule in the time left
            self.cfg.steps = min(self.cfg.steps, int(state["train_config"]["steps"]))
            self.minutes_before = float(state.get("minutes_trained", 0.0))
        if state["num_items"] != self.task.num_items():
            log.warning(
                "the data changed since the checkpoint (%d items, now %d): the resumed run will not "
                "reproduce an uninterrupted one",
                state["num_items"],
                self.task.num_items(),
            )
        log.info("resumed from %s at step %d", folder, self.step)
        return True

    # ------------------------------------------------------------------------------------------ training
    def _rows(self, micro: int) -> torch.Tensor:
        chunk = micro * self.dist.world_size + self.dist.rank
        return torch.arange(chunk * self.micro_batch, (chunk + 1) * self.micro_batch)

    def _run_phase(self, phase_idx: int, phase: str, batches: list[Any], ctxs: list[dict], step: int):
        cfg, accum = self.cfg, self.cfg.grad_accum
        module, opt = self.wrapped[phase], self.optimizers[phase]
        opt.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {}
        for m in range(accum):
            rng = BatchRandom(mix_seed(cfg.seed, phase_idx), step, self._rows(m), cfg.batch_size, self.device)
            sync = m == accum - 1 or not isinstance(module, DistributedDataParallel)
            with contextlib.nullcontext() if sync else module.no_sync():
                with autocast_context(self.device, cfg.precision):
                    out = self.task.phase_loss(phase, self.wrapped, batches[m], ctxs[m], rng, step)
                self.scaler.scale(out.loss / accum).backward()
            items = {f"{phase}/loss" if phase != "model" else "loss": out.loss, **out.logs}
            for k, v in items.items():
                v = torch.as_tensor(v, dtype=torch.float32).detach().to(self.device)
                logs[k] = logs.get(k, 0.0) + v / accum
        self.scaler.unscale_(opt)
        params = [p for g in opt.param_groups for p in g["params"]]
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        logs[f"{phase}/grad_norm" if phase != "model" else "grad_norm"] = grad_norm.detach().float()
        return opt, logs

    def _train_step(self, step: int, stop_requested: bool, time_up: bool) -> tuple[dict[str, float], bool]:
        cfg = self.cfg
        torch.manual_seed(
            mix_seed(cfg.seed, step, self.dist.rank, 101)
        )  # dropout & co. depend on the step only
        indices = self.sampler.indices(step)
        batches = [self.task.get_batch(indices[self._rows(m)], self.device) for m in range(cfg.grad_accum)]
        ctxs: list[dict] = [{} for _ in range(cfg.grad_accum)]
        logs: dict[str, torch.Tensor] = {}
        for phase_idx, phase in enumerate(self.task.phases(step)):
            opt, phase_logs = self._run_phase(phase_idx, phase, batches, ctxs, step)
            # the phases of one step are independent optimisers; stepping each right after its backward
            # keeps the next phase seeing updated weights, as alternating GAN training expects
            self._check_finite(phase_logs, step)  # also replaces each value by its mean over ranks
            logs.update(phase_logs)
            self.scaler.step(opt)
            self.scaler.update()
            self.schedulers[phase].step()
            if phase == "model":
                self.ema.update(self.task.model)
        flags = torch.tensor([float(stop_requested), float(time_up)], device=self.device)
        flags = all_reduce_mean(flags)  # any rank asking to stop stops everyone, at the same step
        return {k: float(v) for k, v in logs.items()}, bool(flags.max() > 0)

    def _check_finite(self, logs: dict[str, torch.Tensor], step: int) -> None:
        names = list(logs)
        values = all_reduce_mean(torch.stack([logs[k] for k in names]))
        bad = [n for n, v in zip(names, values.tolist(), strict=True) if not math.isfinite(v)]
        if bad and not self.scaler.is_enabled():
            last = ckpt.latest_checkpoint(self.ckpt_root)
            raise TrainingDiverged(
                f"{', '.join(bad)} became non-finite at step {step + 1}; training stopped without saving. "
                f"Last good checkpoint: {last or 'none yet'}. Lower train.lr, raise train.warmup_steps or "
                "check the data, then resume with --resume."
            )
        for n, v in zip(names, values, strict=True):
            logs[n] = v

    def fit(self, resume: bool = False) -> list[dict[str, float]]:
        """Train to `cfg.steps` (or the time budget); returns the logged history.

        Under torchrun, a collective that fails because another process died or stopped answering within
        `distributed.collective_timeout()` raises `PeerLost` naming the checkpoint to resume from.
        """
        try:
            return self._fit(resume)
        except RuntimeError as e:
            if not (self.dist.enabled and is_peer_failure(e)):
                raise
            raise self._peer_lost(e) from e

    def _peer_lost(self, error: Exception) -> PeerLost:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # gloo's "[/path/pair.cc:537] Read error ...: Connection reset by peer. This is typically ..." → the
        # middle part
        reason = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else type(error).__name__
        reason = reason.split(". This is typically")[0]
        last = ckpt.latest_checkpoint(self.ckpt_root)
        return PeerLost(
            f"process {self.dist.rank} of {self.dist.world_size} stopped at step {self.step + 1}: another "
            f"process of the run died or stopped answering ({reason[:300]}). Last checkpoint: "
            f"{last or 'none yet'}. Start the same command again with --resume on every node "
            "(torchrun --max-restarts=N does this by itself when the command has --resume)."
        )

    def _fit(self, resume: bool) -> list[dict[str, float]]:
        cfg = self.cfg
        if resume and not self.resume():
            log.info("no checkpoint in %s: starting from scratch", self.ckpt_root)
        self.sampler = GlobalBatchSampler(self.task.num_items(), cfg.batch_size, cfg.seed)
        writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "logs" / self.task.name), purge_step=self.step + 1)
        fit_pending = cfg.fit_to_time and cfg.max_minutes > 0
        bar = tqdm(
            # a time-budgeted run learns its step count from its first seconds (also when resumed before
            # that): until then its bar shows no total (not the placeholder cap, whose ETA reads in days)
            total=None if fit_pending and cfg.steps == self.configured_steps else cfg.steps,
            initial=self.step,
            desc=f"train {self.task.name}",
            unit="step",
            disable=not (self.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        start, images_seen, first_step = time.perf_counter(), 0, self.step
        self._fit_start = start
        timer = (first_step + 5, 0.0)  # (step at which the rate measurement starts, its time)
        # the rate is measured over ≥ 20 steps and ≥ 5 % of the budget (at most a minute): a few fast or
        # slow steps on a shared machine must not decide the length of the whole schedule
        fit_window = min(60.0, 0.05 * cfg.max_minutes * 60)
        refit_window = max(fit_window, 0.1 * cfg.max_minutes * 60)
        cap = cfg.steps  # a refit may lengthen the schedule again, never past the configured steps
        snapshot_at = self._snapshot_due()
        for m in self.modules.values():
            m.train()
        with StopOnInterrupt() as interrupt:
            while self.step < cfg.steps:
                elapsed = self.minutes_before + (time.perf_counter() - start) / 60
                time_up = cfg.max_minutes > 0 and elapsed >= cfg.max_minutes
                if time_up and self.step == first_step and self.minutes_before > 0:
                    break  # resumed with its budget already spent: nothing more to train
                logs, stop = self._train_step(self.step, interrupt.requested, time_up)
                self.step += 1
                if self.step == timer[0]:
                    timer = (timer[0], time.perf_counter())
                elif (
                    fit_pending
                    and self.step >= timer[0] + 20
                    # a window ends after its time, or early when the schedule would end inside it
                    and (time.perf_counter() - timer[1] >= fit_window or self.step + 1 >= cfg.steps)
                ):
                    remaining = self._fit_steps_to_time(start, timer, cap)
                    bar.total = cfg.steps
                    bar.refresh()
                    # the rate is measured again every refit_window: a machine that was busy during the
                    # first window (or became busy later) must not leave the budget unused or overrun
                    timer = (self.step, time.perf_counter())
                    fit_pending = remaining > 0.25 * cfg.max_minutes * 60
                    fit_window = refit_window
                images_seen += cfg.batch_size
                bar.update(1)
                rate = images_seen / max(1e-9, time.perf_counter() - start)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps or stop:
                    logs.update(
                        {
                            "images_per_s": rate,
                            "lr": self.schedulers["model"].get_last_lr()[0],
                            "step": self.step,
                            "minutes": (time.perf_counter() - start) / 60,
                        }
                    )
                    self.history.append(logs)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", img_s=f"{rate:.0f}")
                    if writer:
                        for k, v in logs.items():
                            if k != "step":
                                writer.add_scalar(f"{self.task.name}/{k}", v, self.step)
                if self.step >= snapshot_at * cfg.steps:
                    self._write_snapshot()
                    snapshot_at = math.inf  # once
                self._periodic(writer, stop)
                if stop:
                    break
        bar.close()
        if self.step > first_step:
            self.save_checkpoint()
        if writer:
            writer.close()
        if interrupt.requested:
            raise KeyboardInterrupt(f"training interrupted at step {self.step}; resume with --resume")
        return self.history

    def _snapshot_due(self) -> float:
        """The fraction of `steps` at which `_write_snapshot` runs: `cfg.snapshot_fraction`, or infinity when
        there is none or a resumed run had already written it. A time-budgeted run's `steps` is a far cap
        until its first fit, so the snapshot waits for the fitted count."""
        cfg = self.cfg
        if not cfg.snapshot_fraction:
            return math.inf
        record = ckpt.snapshot_record(self.run_dir / cfg.snapshot_folder)
        written = record is not None and record.get("of") == self.task.name and record["step"] <= self.step
        return math.inf if written else cfg.snapshot_fraction

    def _write_snapshot(self) -> None:
        """Write the EMA weights as the model folder `run_dir/<snapshot_folder>` with a record of this step
        (`trainer_state.SNAPSHOT_FILE`)."""
        if self.dist.is_main:
            folder = self.run_dir / self.cfg.snapshot_folder
            self.task.save_model(folder, self.task.model.state_dict(), self.ema.state_dict())
            ckpt.write_snapshot_record(folder, self.task.name, self.step)
            log.info("snapshot of %s at step %d written: %s", self.task.name, self.step, folder)

    def _fit_steps_to_time(self, start: float, timer: tuple[int, float], cap: int) -> float:
        """Set `steps` to what the time budget allows at the rate measured since `timer` (at most `cap`), so
        that a cosine schedule (which reads `steps`) ends with the budget; called again every tenth of the
        budget while a quarter of it is left, and a change under 10 % is ignored (the learning rate moves
        when `steps` does). Every rank adopts the smallest estimate. Returns the seconds of budget left."""
        now = time.perf_counter()
        rate = (self.step - timer[0]) / max(1e-9, now - timer[1])
        remaining = (self.cfg.max_minutes - self.minutes_before) * 60 - (now - start)
        projected = torch.tensor(float(self.step + int(0.97 * remaining * rate)), device=self.device)
        if self.dist.enabled:
            torch.distributed.all_reduce(projected, op=torch.distributed.ReduceOp.MIN)
        steps = max(self.step + 1, min(cap, int(projected)))
        if abs(steps - self.cfg.steps) > 0.1 * self.cfg.steps:
            log.info(
                "fitting the run to %.1f minutes: %d steps instead of %d (%.2f steps/s)",
                self.cfg.max_minutes,
                steps,
                self.cfg.steps,
                rate,
            )
            self.cfg.steps = steps
        return remaining

    def _periodic(self, writer, stop: bool) -> None:
        cfg, step = self.cfg, self.step
        final = step == cfg.steps or stop
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not final:
            self.save_checkpoint()
        want_eval = (cfg.eval_every and step % cfg.eval_every == 0) or final
        want_samples = (cfg.sample_every and step % cfg.sample_every == 0) or final
        if not (want_eval or want_samples) or not self.dist.is_main:
            return
        ema_model = self._ema_model()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if want_eval:
                metrics = self.task.evaluate(ema_model, step)
                if metrics:
                    self.history.append({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
                    log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
                    if writer:
                        for k, v in metrics.items():
                            writer.add_scalar(f"{self.task.name}/eval/{k}", v, step)
            if want_samples:
                grid = self.task.samples(ema_model, step)
                if grid is not None:
                    path = self.run_dir / "samples" / f"{self.task.name}_step_{step:08d}.png"
                    nrow = getattr(self.task, "grid_nrow", None)
                    save_grid(path, grid, nrow=nrow, upscale=max(1, 128 // grid.shape[-1]))
                    if writer:
                        writer.add_image(f"{self.task.name}/samples", (make_grid(grid, nrow) + 1) / 2, step)
        for m in self.modules.values():
            m.train()

    def _ema_model(self) -> nn.Module:
        """A copy of the model carrying the EMA weights, in eval mode."""
        import copy

        model = copy.deepcopy(self.task.model)
        self.ema.copy_to(model)
        return model.eval()
