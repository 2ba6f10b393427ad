"""What the CPU can do, read from /proc/cpuinfo: for logs and metadata, and, in training,
whether bf16 autocast pays. How int8 models run is decided by what the CPU computes
(cifar_onnx.registry.make_session), not by these flags."""

from __future__ import annotations

import math
import os
import platform
from functools import cache
from pathlib import Path

# x86 instructions that multiply uint8 by int8 with 32-bit accumulation (no 16-bit saturation).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@cache
def cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "flags", ...); empty where
    there is no such file (macOS, Windows). Every processor of a machine reports the same ones."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in block.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def cpu_flags() -> frozenset[str]:
    return frozenset(cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_generation() -> str:
    """CPUID family and model ("family 23, model 1"): tells apart CPUs that share a model name
    and flags (an AMD EPYC of 2017 and one of 2021 both say "AMD EPYC" and avx2)."""
    fields = cpuinfo()
    if "cpu family" not in fields or "model" not in fields:
        return "not recorded"
    return f"family {fields['cpu family']}, model {fields['model']}"


def bf16_is_fast(flags: frozenset[str] | None = None) -> bool:
    """bfloat16 autocast pays for plain convolutions only with AMX or AVX512-BF16; without either
    PyTorch emulates it, many times slower than fp32 (figures per CPU: docs/MODEL.md, "Training
    cycles")."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_FLAGS)


def relevant_flags(flags: frozenset[str] | None = None) -> list[str]:
    """The flags that change how we train or serve, for logs and metadata."""
    flags = cpu_flags() if flags is None else flags
    return sorted(f for f in (*VNNI_FLAGS, *BF16_FLAGS, "avx2", "avx512f") if f in flags)


def _quota_v2(text: str) -> float | None:
    """cgroup v2 cpu.max: "<quota> <period>" in microseconds, or "max <period>" (no limit)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return int(parts[0]) / int(parts[1])


def _quota_v1(quota: str, period: str) -> float | None:
    """cgroup v1 cpu.cfs_quota_us (-1: no limit) over cpu.cfs_period_us."""
    q, p = int(quota), int(period)
    return None if q <= 0 or p <= 0 else q / p


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's container in CPUs (e.g. 1.5), or None when there is none."""
    try:
        if (root / "cpu.max").exists():
            return _quota_v2((root / "cpu.max").read_text())
        v1 = next((d for d in (root / "cpu", root / "cpu,cpuacct", root) if (d / "cpu.cfs_quota_us").exists()), None)
        if v1 is not None:
            return _quota_v1((v1 / "cpu.cfs_quota_us").read_text(), (v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        pass
    return None


@cache
def usable_cpus() -> int:
    """The CPUs this process may use: the container's CPU quota (rounded up), else the CPUs it
    may be scheduled on, else the machine's count. In a Kubernetes pod os.cpu_count() is the
    node's count (32, say) while the pod's limit may be 1: every thread default derives from this."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return max(1, min(count, math.ceil(limit)) if limit else count)
