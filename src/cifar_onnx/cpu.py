"""What the CPU can do, read from /proc/cpuinfo: for logs and metadata, and, in training,
whether bf16 autocast pays. How int8 models run is decided by what the CPU computes
(cifar_onnx.registry.make_session), not by these flags."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

# x86 instructions that multiply uint8 by int8 with 32-bit accumulation (no 16-bit saturation).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


@cache
def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    line = next((line for line in text.splitlines() if line.startswith("model name")), "")
    return line.partition(":")[2].strip() or platform.machine()


def bf16_is_fast(flags: frozenset[str] | None = None) -> bool:
    """bfloat16 autocast pays for plain convolutions only with AMX or AVX512-BF16 (measured 1.85x
    to 3-4x); without either PyTorch emulates it, about 24x slower than fp32."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_FLAGS)


def relevant_flags(flags: frozenset[str] | None = None) -> list[str]:
    """The flags that change how we train or serve, for logs and metadata."""
    flags = cpu_flags() if flags is None else flags
    return sorted(f for f in (*VNNI_FLAGS, *BF16_FLAGS, "avx2", "avx512f") if f in flags)
