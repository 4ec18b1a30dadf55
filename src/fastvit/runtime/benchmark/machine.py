"""What the benchmark says about the machine it ran on: the CPU and its vector and matrix extensions,
how busy the machine was, and which interpreters have which packages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

__all__ = ["cpu_capabilities", "cpu_name", "interpreter_has", "machine_busy_seconds", "package_version"]

CAPABILITY_FLAGS = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "AVX512-BF16": ("avx512_bf16",),
    "AMX": ("amx_bf16", "amx_tile"),
}
"""Each capability the report names, and the /proc/cpuinfo flags that make it (all of them)."""


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_capabilities() -> dict[str, bool] | None:
    """AVX2, AVX-512, AVX512-BF16 and AMX: whether the CPU has each (Linux /proc/cpuinfo flags),
    None where the flags cannot be read."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return None
    present = set(flags.split())
    return {name: all(flag in present for flag in needed) for name, needed in CAPABILITY_FLAGS.items()}


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:9]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


def interpreter_has(python: str, module: str) -> bool:
    """Whether ``python`` can import ``module``."""
    if python == sys.executable:
        import importlib.util

        return importlib.util.find_spec(module) is not None
    try:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def package_version(python: str, package: str) -> str:
    if python == sys.executable:
        from importlib.metadata import version

        return version(package)
    probe = subprocess.run([python, "-c", f"from importlib.metadata import version; print(version('{package}'))"],
                           capture_output=True, text=True, timeout=60)
    return probe.stdout.strip() or "?"
