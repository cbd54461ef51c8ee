"""Process-group set-up for `torchrun`, device choice, and rank-0-only helpers.

Every rank runs the same loop; only rank 0 writes files, and checkpoints are fenced by barriers so no
rank reads a folder that is half written (the usual cause of multi-GPU hangs is one rank waiting in a
collective the others never reach: every collective here is called unconditionally on all ranks).

A process that dies (or stops answering) must not leave the others waiting for ever: every collective
gives up after `collective_timeout()` (`$LATENTDIFF_DIST_TIMEOUT` seconds, default 30 minutes, enough for
rank 0 to write a checkpoint or measure latent statistics while the others wait at a barrier), and the
training loop turns a failed collective into `PeerLost`, which names the checkpoint to resume from.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TIMEOUT_ENV = "LATENTDIFF_DIST_TIMEOUT"
BACKEND_ENV = "LATENTDIFF_DIST_BACKEND"
DEFAULT_TIMEOUT_S = 30 * 60


class PeerLost(RuntimeError):
    """Another process of a distributed run died or stopped answering; this one stops too."""


# what torch's collectives raise when a peer is gone: DistError, or (gloo on CPU, in DDP's backward and in
# barriers) a plain RuntimeError carrying the transport's message
_PEER_FAILURE_MARKS = ("/gloo/", "NCCL", "Connection reset by peer", "Connection closed by peer", "Timed out")


def is_peer_failure(error: BaseException) -> bool:
    """Whether `error` is a collective that failed because another process died or did not answer."""
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(mark in str(error) for mark in _PEER_FAILURE_MARKS)


def collective_timeout() -> datetime.timedelta:
    """How long a collective waits for the other processes: `$LATENTDIFF_DIST_TIMEOUT` seconds."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA when present, else CPU; an explicit name that is unavailable is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is None:
            # more processes than GPUs (e.g. two ranks sharing one GPU in a test) share them round-robin
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"--device {name}: MPS is not available on this machine")
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else run single-process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = process_group_backend(dev)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, timeout=collective_timeout())
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
        if rank == 0 and restarts_share_the_agent_store():
            log.warning(
                "torchrun --max-restarts with the rendezvous store shared by the workers: a restarted "
                "process can read the address a dead one left there and fail to connect "
                "(pytorch/pytorch#135712). Start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1."
            )
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def process_group_backend(device: torch.device) -> str:
    """NCCL for CUDA, gloo otherwise; `LATENTDIFF_DIST_BACKEND=gloo` forces gloo with CUDA tensors, which
    lets several ranks share one GPU (NCCL refuses two ranks on the same device)."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced and forced not in ("nccl", "gloo"):
        raise ValueError(f"{BACKEND_ENV}={forced!r}: expected 'nccl' or 'gloo'")
    if forced == "nccl" and device.type != "cuda":
        raise ValueError(f"{BACKEND_ENV}=nccl needs CUDA devices; this rank runs on {device}")
    return forced or ("nccl" if device.type == "cuda" else "gloo")


def restarts_share_the_agent_store() -> bool:
    """Whether torchrun may restart this process (`--max-restarts` > 0) while its workers share the
    agent's rendezvous store, which keeps the previous attempt's keys (TORCH_DISABLE_SHARE_RDZV_TCP_STORE
    unset)."""
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    return shared and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def broadcast_object(obj: object) -> object:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
