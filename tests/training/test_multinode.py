"""Scale-out that survives faults: two torchrun "nodes" on this machine (c10d rendezvous, gloo) train a real
tiny Stage 1 exactly as one process with the same global batch; when one rank is SIGKILLed the other stops
with a clear message within the collective timeout instead of hanging, and the run then resumes from its
last checkpoint, by hand or by torchrun's `--max-restarts`, to the weights of the uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latentdiff.io.checkpoint import load_tensors
from latentdiff.training.distributed import TIMEOUT_ENV
from latentdiff.training.trainer_state import checkpoint_root, list_checkpoints

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

HERE = Path(__file__).parent
STAGE_RUN = HERE / "stage_run.py"
TIMEOUT_S = 20  # the collective timeout the runs here use: a lost peer must be noticed within it

ARGV = [
    "train-autoencoder", "--data", "digits", "--resolution", "8", "--f", "2",
    "--steps", "8", "--batch-size", "16", "--seed", "3", "--lr", "3e-3", "--device", "cpu",
    "--set", "model.base_channels=16", "--set", "model.groups=8", "--set", "model.num_res_blocks=1",
    "--set", "model.mid_attention=false", "--set", "stats_images=64", "--set", "data.eval_images=16",
    "--set", "train.warmup_steps=2", "--set", "train.checkpoint_every=3", "--set", "train.ema_decay=0.9",
]  # fmt: skip


def _env(**hooks: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGE_RUN_")}
    env.update({"OMP_NUM_THREADS": "1", TIMEOUT_ENV: str(TIMEOUT_S)}, **hooks)
    # torchrun shares its rendezvous store with the workers by default, and a restarted worker can then read
    # the address a dead one left there (pytorch/pytorch#135712): a store per restart, as the README says
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_nodes(
    run_dir: Path, logs: Path, *extra: str, max_restarts: int = 0, timeout: float = 240, **hooks: str
) -> tuple[list[int], list[str], float]:
    """Start both nodes' torchrun and wait for both; returns (exit codes, output of each node, wall-clock
    time.time() at which the last one exited)."""
    port = _free_port()
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for node in (0, 1):
        cmd = [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
            "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"run{port}",
            "--local_addr", "127.0.0.1", "--max_restarts", str(max_restarts), "--monitor_interval", "0.5",
            str(STAGE_RUN), "-q", *ARGV, "--out", str(run_dir), *extra,
        ]  # fmt: skip
        with open(logs / f"node{node}.log", "w") as out:
            procs.append(
                subprocess.Popen(
                    cmd, env=_env(**hooks), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        last_exit = time.time()
    finally:
        for p in procs:
            if p.poll() is None:  # a hang: fail the test, but leave no process behind
                p.terminate()  # the agent stops its workers (they run in sessions of their own)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
    codes = [p.returncode for p in procs]
    return codes, [(logs / f"node{n}.log").read_text() for n in (0, 1)], last_exit


def weights(run: Path) -> dict[str, torch.Tensor]:
    folder = run / "autoencoder"
    out = {f"model.{k}": v for k, v in load_tensors(folder / "model.safetensors").items()}
    out.update({f"ema.{k}": v for k, v in load_tensors(folder / "ema.safetensors").items()})
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    """The weights of one process and of an uninterrupted two-node run of the same command."""
    root = tmp_path_factory.mktemp("multinode_reference")
    single = subprocess.run(
        [sys.executable, str(STAGE_RUN), "-q", *ARGV, "--out", str(root / "single")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    codes, logs, _ = launch_two_nodes(root / "two", root / "logs")
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    return {"single": weights(root / "single"), "two_nodes": weights(root / "two")}


def test_two_node_launch_trains_as_one_process_with_the_same_global_batch(reference):
    single, two = reference["single"], reference["two_nodes"]
    assert single.keys() == two.keys()
    # gradients averaged over two ranks instead of one batch agree up to float rounding, which AdamW's
    # division by sqrt(v) turns into at most a small fraction of a step (lr 3e-3) where a gradient is
    # near zero (measured: 5e-5); a sample given another sample's noise moves weights by 1e-2 and more
    for k in single:
        torch.testing.assert_close(two[k], single[k], rtol=0, atol=2e-4, msg=k)


@pytest.mark.parametrize("killed_rank", [1, 0])  # rank 0 also hosts the workers' store
def test_killed_rank_stops_the_other_with_a_clear_message_then_the_run_resumes(
    reference, tmp_path, killed_rank
):
    run, marker = tmp_path / "run", tmp_path / "killed"
    codes, logs, last_exit = launch_two_nodes(
        run,
        tmp_path / "killed_logs",
        STAGE_RUN_KILL_AT="7",
        STAGE_RUN_KILL_RANK=str(killed_rank),
        STAGE_RUN_KILL_ONCE=str(marker),
    )
    assert marker.exists() and all(code != 0 for code in codes), codes
    both = "\n".join(logs)
    survivor = 1 - killed_rank
    assert f"process {survivor} of 2 stopped at step 8: another process of the run died" in both, both[-4000:]
    assert f"Last checkpoint: {checkpoint_root(run, 'autoencoder') / 'step_00000006'}" in both
    (line,) = [x for x in both.splitlines() if "latentdiff train-autoencoder: error:" in x]
    assert ".cc:" not in line.split("error:")[1]  # the transport's reason, without its source file
    # both nodes are down within the collective timeout of the kill (not torch's default 30 minutes)
    assert last_exit - marker.stat().st_mtime < TIMEOUT_S + 15
    assert [s for s, _ in list_checkpoints(checkpoint_root(run, "autoencoder"))] == [3, 6]

    codes, logs, _ = launch_two_nodes(run, tmp_path / "resumed_logs", "--resume")
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    resumed = weights(run)
    for k, v in reference["two_nodes"].items():
        assert torch.equal(resumed[k], v), k


def test_max_restarts_resumes_from_the_last_checkpoint_by_itself(reference, tmp_path):
    run = tmp_path / "run"
    codes, logs, _ = launch_two_nodes(
        run,
        tmp_path / "logs",
        "--resume",  # from scratch at first (no checkpoint yet), from the last checkpoint after a restart
        max_restarts=1,
        STAGE_RUN_KILL_AT="7",
        STAGE_RUN_KILL_RANK="1",
        STAGE_RUN_KILL_ONCE=str(tmp_path / "killed_once"),
    )
    assert (tmp_path / "killed_once").exists()  # a rank really died mid-run
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    resumed = weights(run)
    for k, v in reference["two_nodes"].items():
        assert torch.equal(resumed[k], v), k


STALLED_RANK = """
import os, signal, sys, time
from latentdiff.training.distributed import barrier, init_distributed, is_peer_failure
info = init_distributed("cpu")
barrier()
if info.rank == 1:
    os.kill(os.getpid(), signal.SIGSTOP)  # alive, but never answers again
start = time.monotonic()
try:
    barrier()
except RuntimeError as e:
    print(f"gave up after {time.monotonic() - start:.2f} s; peer failure: {is_peer_failure(e)}")
    sys.exit(3)
"""


def test_a_rank_that_stops_answering_is_given_up_after_the_collective_timeout():
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
        env[TIMEOUT_ENV] = "3"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", STALLED_RANK], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    try:
        out, err = procs[0].communicate(timeout=120)
    finally:
        procs[1].kill()  # SIGKILL ends a stopped process too
        procs[1].communicate()
    assert procs[0].returncode == 3, err.decode()[-2000:]
    seconds = float(out.decode().split("gave up after ")[1].split(" s")[0])
    assert 2.5 <= seconds < 15, seconds
    assert "peer failure: True" in out.decode()


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf"])
def test_a_bad_collective_timeout_is_refused_naming_the_variable(monkeypatch, value):
    from latentdiff.training.distributed import collective_timeout

    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=f"{TIMEOUT_ENV}=.*positive number of seconds"):
        collective_timeout()
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert collective_timeout().total_seconds() == 2.5


def test_restarts_over_the_shared_agent_store_are_recognised(monkeypatch):
    from latentdiff.training.distributed import restarts_share_the_agent_store

    cases = [("True", "3", True), ("True", "0", False), ("False", "3", False), (None, None, False)]
    for shared, restarts, expected in cases:
        env = {"TORCHELASTIC_USE_AGENT_STORE": shared, "TORCHELASTIC_MAX_RESTARTS": restarts}
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        assert restarts_share_the_agent_store() is expected, (shared, restarts)
