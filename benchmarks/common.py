"""What the benchmark modules share: where they are, the sample upload, and the machine record.
A leaf: it imports no other benchmark module, so none of them import each other in a circle."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from cifar_onnx.cpu import cpu_generation, cpu_model, relevant_flags

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLE = REPO / "tests" / "data" / "cifar" / "ship.jpg"


def machine() -> dict[str, str]:
    import onnxruntime
    import psutil

    versions = {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    # The flags decide whether the int8 models run fused (cifar_onnx.cpu): part of every figure.
    return {"cpu": cpu_model(), "cpu_generation": cpu_generation(), "cpu_flags": " ".join(relevant_flags()), "cores": str(os.cpu_count()), "memory_gb": f"{psutil.virtual_memory().total / 2**30:.0f}",
            "os": platform.platform(), **versions, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip


def cpu_label(machine: dict) -> str:
    """How a report names the CPU a run came from: model name, CPUID generation where recorded (two
    generations can share a model name, as AMD EPYCs do), and the flags the int8 kernels depend on."""
    generation = machine.get("cpu_generation", "not recorded")
    name = machine["cpu"] + ("" if generation == "not recorded" else f" {generation}")
    return f"{name} ({machine['cpu_flags']})"
