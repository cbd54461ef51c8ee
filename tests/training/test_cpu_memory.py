"""The CPU trainer keeps freed activation memory mapped instead of faulting it in again every step."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)

# allocate and free 200 MiB in 4 MiB tensors, like the activations of a training step, and count the
# page faults of the repeated rounds
PROBE = """
import resource, torch
from latentdiff.training.cpu_memory import keep_freed_memory
applied = keep_freed_memory()
def rounds():
    for _ in range(5):
        xs = [torch.empty(1 << 20).fill_(1.0) for _ in range(50)]
        del xs
rounds()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(opt_out: bool) -> tuple[str, int]:
    env = {**os.environ, "LATENTDIFF_MALLOC_TUNING": "0" if opt_out else "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


def test_freed_memory_is_reused_without_page_faults_and_the_opt_out_works():
    applied, faults = probe(opt_out=False)
    applied_off, faults_off = probe(opt_out=True)
    assert (applied, applied_off) == ("True", "False")
    pages_per_round = 200 * 2**20 // 4096
    # glibc's defaults give the memory back and fault every page in again (measured: ~5 rounds' worth)
    assert faults_off > pages_per_round
    assert faults < pages_per_round // 20
