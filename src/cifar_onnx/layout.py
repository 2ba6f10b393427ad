"""The serving layout (inference workers x ONNX Runtime threads per call, batching) and why it
was chosen, for the start log: a deployment should see what it runs and how to change it.

The defaults come from measurement, not from the machine's size alone: one single-threaded call
per usable CPU answered the most requests a second under load on every CPU measured
(benchmarks/RESULTS.md), and `python -m benchmarks.layout` measures the alternatives on the
machine at hand, printing the settings to use if another layout wins there.
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from cifar_onnx.cpu import cgroup_cpu_limit, usable_cpus
from cifar_onnx.settings import Settings


def _default(name: str) -> object:
    spec = next(f for f in fields(Settings) if f.name == name)
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default


def describe(settings: Settings) -> str:
    """One line: the layout in force, where each part came from, and how to change or measure it."""
    cpus = usable_cpus()
    quota = cgroup_cpu_limit()
    source = f"the container's CPU quota {quota:g}" if quota else "the CPUs this process may run on"
    parts = {
        "inference_workers": f"{settings.inference_workers} inference worker(s)",
        "intra_op_threads": f"{settings.intra_op_threads} ONNX Runtime thread(s) per call",
        "lone_request_threads": (
            f"{settings.lone_request_threads} for a request alone"
            if settings.lone_request_threads > settings.intra_op_threads
            else "no wider call for a request alone"
        ),
        "max_batch": f"up to {settings.max_batch} images per call",
        "batch_wait_ms": f"batch wait {settings.batch_wait_ms:g} ms",
    }
    chosen = [f"CIFAR_ONNX_{name.upper()}" for name in parts if getattr(settings, name) != _default(name)]
    why = (f"set by {', '.join(chosen)}" if chosen else
           f"the default for {cpus} usable CPU(s) ({source}): one single-threaded call per CPU, all of them for a request alone")  # fmt: skip
    return (
        f"serving layout: {', '.join(parts.values())}; {why}. Override with those variables; "
        "`python -m benchmarks.layout` measures the alternatives on this machine"
    )
