"""How the process's C allocator treats freed memory, for models that allocate the same activations
call after call.

glibc's malloc gives the top of its heap back to the operating system once more than a threshold of
it is free, and serves large blocks from fresh memory maps that it unmaps on ``free``. A forward pass
frees all its activations at the end, so the next call faults every page back in: T8 at batch 1 took
about 1,400 page faults per call and 12 ms instead of 7.7 ms on a 2-core Xeon (ONNX Runtime and
OpenVINO keep arenas of their own and never pay this). :func:`keep_freed_memory` tells malloc to
keep the memory for the next call.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["KEPT_BYTES", "MAPPED_BYTES", "keep_freed_memory"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
KEPT_BYTES = 1 << 30
"""Free memory at the top of a heap that malloc keeps instead of returning it (and the process
holds its peak working set up to this much)."""
MAPPED_BYTES = 32 << 20
"""Blocks at least this large get memory maps of their own (glibc's largest allowed setting);
smaller ones are reused from the heaps."""
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")

_kept = False


def keep_freed_memory() -> bool:
    """Set glibc's malloc (once per process) to keep freed memory for reuse, unless the environment
    already tunes it. Returns whether malloc keeps it now (False where the C library is not glibc)."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already has
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = bool(mallopt(M_TRIM_THRESHOLD, KEPT_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, MAPPED_BYTES))
    return _kept
