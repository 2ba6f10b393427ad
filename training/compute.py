"""Where a training run computes: one device (CUDA, Apple MPS or the CPU), its precision, and,
under `torchrun`, its place among the processes that DistributedDataParallel joins.

    python -m training.train ...                                  # this machine, --device auto
    torchrun --nproc_per_node 2 -m training.train ...             # 2 processes (GPUs, or CPU shares)
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST ... -m training.train ...   # 2 machines

Every process sees the same global batch (same seed, same order, same augmentation) and trains on
its share of it, rows rank, rank + world, ...; DDP averages the gradients, so N processes take the
same steps one process would take on the whole batch (up to BatchNorm, whose statistics are
per share). Rank 0 alone evaluates, logs, checkpoints and exports.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cifar_onnx.cpu import bf16_is_fast


@dataclass(frozen=True)
class Compute:
    device: torch.device
    precision: str  # "bf16" (autocast) or "fp32"
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on this device where chosen: convolutions and matmuls in bf16, weights and
        optimiser state in fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def describe(self) -> dict[str, Any]:
        """For run.json: what trained the model."""
        out: dict[str, Any] = {"device": str(self.device), "precision": self.precision, "processes": self.world}
        if self.device.type == "cuda":
            out["gpu"] = torch.cuda.get_device_name(self.device)
        return out


def choose_device(requested: str = "auto") -> torch.device:
    """auto: CUDA when a GPU is visible, else Apple's MPS, else the CPU."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def choose_precision(requested: str, device: torch.device, flags: frozenset[str] | None = None) -> str:
    """auto: on the CPU bf16 where it has AMX or AVX512-BF16 (elsewhere emulated, far slower);
    on CUDA bf16 where the GPU supports it; fp32 on MPS. bf16/fp32 force it."""
    if requested not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {requested!r}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if bf16_is_fast(flags) else "fp32"
    return "fp32"


def setup(device: str = "auto", precision: str = "auto") -> Compute:
    """This process's Compute; joins the process group when started by torchrun (WORLD_SIZE > 1):
    NCCL between GPUs, gloo between CPU processes."""
    chosen = choose_device(device)
    if chosen.type == "cuda":  # fixed batch shapes: let cuDNN time its algorithms once and keep the fastest
        torch.backends.cudnn.benchmark = True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        if chosen.type == "cuda":
            chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(chosen)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Compute(chosen, choose_precision(precision, chosen), rank, world)


def barrier(compute: Compute) -> None:
    if compute.world > 1:
        dist.barrier()


def broadcast(compute: Compute, value: Any) -> Any:
    """Rank 0's value, on every rank (a decision all processes must share)."""
    if compute.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_all(compute: Compute, *values: float) -> list[float]:
    """Per-process counters summed over all processes (epoch loss and accuracy)."""
    if compute.world == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def weights_digest(model: nn.Module) -> str:
    """A hash of the parameters. Buffers are left out: each process's BatchNorm running statistics
    follow its own share of the last batch, and DDP copies rank 0's over them at every forward."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.named_parameters()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def digests(compute: Compute, model: nn.Module) -> list[str]:
    """Every process's weights digest: all equal when data-parallel training stayed in step."""
    mine = weights_digest(model)
    if compute.world == 1:
        return [mine]
    out: list[Any] = [None] * compute.world
    dist.all_gather_object(out, mine)
    return out


def wrap(model: nn.Module, compute: Compute, frozen_at_times: bool = False) -> nn.Module:
    """DistributedDataParallel around the model when there are several processes. frozen_at_times:
    some parameters stop taking gradients for a while (a head-only warm-up, airbench's whitening
    bias), which DDP must then look for at every step."""
    if compute.world == 1:
        return model
    ids = [compute.device.index] if compute.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=frozen_at_times)


def finish(compute: Compute) -> None:
    """Leave the process group. A data-parallel process then exits at once: gloo's threads were
    seen to abort the interpreter's normal shutdown ("terminate called without an active
    exception", SIGABRT) after the run had finished and saved everything."""
    if compute.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
