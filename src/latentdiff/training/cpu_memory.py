"""Keep the memory a training step frees inside the process (glibc malloc on Linux, CPU training).

A training step frees most of its activations after the backward pass and allocates the same sizes again
in the next forward. With glibc's defaults the heap top is trimmed back to the kernel once a few MB are
free (and blocks above the mmap threshold are unmapped at once), so every step pays page faults and the
kernel's zeroing of the same few hundred MB. Raising the mmap threshold to its maximum and the trim
threshold to 1 GiB keeps those pages mapped. Measured on the 2-core benchmark machine, training step of
the unet_throughput U-Net (batch 64, fp32): 57.1 -> 62.8 images/s.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper limit on 64-bit systems
OPT_OUT = "LATENTDIFF_MALLOC_TUNING"


def keep_freed_memory(trim_bytes: int = 1 << 30) -> bool:
    """Set glibc's mmap and trim thresholds for this process; True when both were applied.

    A no-op (False) off Linux/glibc and when the environment sets LATENTDIFF_MALLOC_TUNING=0. The
    setting lasts for the life of the process: up to `trim_bytes` of freed memory stay mapped.
    """
    if os.environ.get(OPT_OUT, "1") == "0":
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    applied = (
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes) == 1
    )
    log.debug("glibc malloc thresholds %s", "raised" if applied else "left unchanged (mallopt refused)")
    return applied
