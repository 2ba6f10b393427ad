"""Train a registered model on CIFAR-10 on the CPU: resumable, time-boxed, logged every epoch.

    python -m training.train --model airbench --data-dir ../shared/data/cifar10 --threads 2

Sections in the order data flows: recipes, augmentation, optimiser and schedule, evaluation,
checkpointing, the loop. Every epoch writes train/val/test loss and accuracy (test only to
draw its curve, never to choose anything) with wall and CPU time to `metrics.jsonl`, and a
checkpoint that `--resume` continues from.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cifar_onnx.cpu import cpu_model, relevant_flags
from training import compute as cmp
from training.augment import augment, cutmix
from training.batches import random_images, to_float
from training.compute import Compute
from training.data import Cifar10, cache_dir, load_cifar10
from training.distill import distillation_loss, teacher_probs
from training.models import VGG16BN, AirbenchNet, create_model
from training.warmstart import WarmStart, warm_start

# ---------------------------------------------------------------------------------------------
# Recipes: every hyperparameter of a run, one dict per model. The values were chosen on the
# validation set and by measured CPU throughput (docs/MODEL.md says what each bought).
# ---------------------------------------------------------------------------------------------

RECIPES: dict[str, dict[str, Any]] = {
    # airbench94 (Keller Jordan), on the CPU in fp32: SGD-Nesterov at a high lr with frozen BN
    # scales and a 64x lr on BN biases, label smoothing 0.2, a triangular schedule, and
    # Lookahead-style weight averaging every 5 steps; alternating flips and 2-px translation.
    "airbench": dict(
        model={}, epochs=18, batch_size=1024, optimizer="sgd", lr=1.5, momentum=0.85,
        nesterov=True, weight_decay=1.33e-3, head_lr_scale=1.0, body_lr_scale=1.0,
        norm_lr_scale=64.0, schedule=(0.2, 0.23, 0.07), head_warmup_steps=0,
        label_smoothing=0.2, translate=2, flip="alternating", cutout=0, lookahead=True,
        whiten_bias_epochs=3, precision="auto",
    ),
    # Transfer learning: a short head-only warm-up with the body frozen (its BatchNorm kept in
    # eval mode so ImageNet statistics are not overwritten by a random head's gradients), then
    # the whole network with a 3x lower lr for the pretrained body; AdamW, one-cycle, no decay
    # on norms and biases, label smoothing 0.1, crop and flip.
    "efficientnet_lite0": dict(
        model=dict(resolution=112), epochs=7, batch_size=64, optimizer="adamw", lr=3e-3,
        momentum=0.9, nesterov=False, weight_decay=0.05, head_lr_scale=1.0, body_lr_scale=1 / 3,
        norm_lr_scale=1.0, schedule=(0.1, 0.15, 0.01), head_warmup_steps=150,
        label_smoothing=0.1, translate=4, flip="random", cutout=0, lookahead=False,
        whiten_bias_epochs=0, precision="fp32",
    ),
    # VGG16-BN at full width in torchvision's layout, from HED's ImageNet-descended convs
    # (BatchNorm inserted and fitted from data, training.models), trained as its from-scratch
    # anchor is: one long schedule (here 60 epochs, a short warm-up, then a cosine to zero: most
    # of the accuracy comes in the final anneal), SGD-Nesterov, crop, flip and cutout. No label
    # smoothing: it left the confidences in a shape one temperature could not calibrate
    # (docs/MODEL.md). bf16 where the CPU has it; resumable every epoch.
    "vgg16_bn": dict(
        model=dict(width=1.0, resolution=32, backbone="hed"), epochs=60, batch_size=128, optimizer="sgd",
        lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, head_lr_scale=1.0,
        body_lr_scale=1.0, norm_lr_scale=1.0, schedule=(0.1, 0.05, 0.0), schedule_shape="cosine",
        head_warmup_steps=0, label_smoothing=0.0, translate=4, flip="random", cutout=8, lookahead=False,
        whiten_bias_epochs=0, precision="auto",
    ),
}  # fmt: skip
RECIPES["efficientnet_lite1"] = RECIPES["efficientnet_lite2"] = RECIPES["efficientnet_lite0"]

# Added to any recipe run with --teacher (Hinton et al.: half the label, half the teachers' answer
# softened at T 2), so that a recipe without a teacher records no distillation.
DISTILLATION: dict[str, float] = dict(distill_alpha=0.5, distill_temperature=2.0)

# ---------------------------------------------------------------------------------------------
# Optimiser and schedule.
# ---------------------------------------------------------------------------------------------


def param_groups(model: nn.Module, recipe: dict) -> list[dict]:
    """Three groups: the new head; the body; the body's normalisation layers (no weight decay
    for AdamW; airbench gives BN biases a 64x lr). Weight decay is divided by each group's lr
    scale so that the decay per step, lr * wd, is the same for every decayed group."""
    head_ids = {id(p) for p in model.head.parameters()}
    norm_ids = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for p in m.parameters()}  # fmt: skip
    groups: dict[str, list] = {"head": [], "body": [], "norm": []}
    for p in model.parameters():
        if p.requires_grad:
            groups["head" if id(p) in head_ids else "norm" if id(p) in norm_ids else "body"].append(p)
    scales = {"head": recipe["head_lr_scale"], "body": recipe["body_lr_scale"],
              "norm": recipe["body_lr_scale"] * recipe["norm_lr_scale"]}  # fmt: skip
    wd = recipe["weight_decay"]
    out = []
    for kind, params in groups.items():
        decay = 0.0 if (kind == "norm" and recipe["optimizer"] == "adamw") else wd / scales[kind]
        out.append(dict(params=params, name=kind, lr_scale=scales[kind], weight_decay=decay))
    return out


def make_optimizer(model: nn.Module, recipe: dict) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe)
    if recipe["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=recipe["lr"], betas=(recipe["momentum"], 0.999))
    return torch.optim.SGD(groups, lr=recipe["lr"], momentum=recipe["momentum"], nesterov=recipe["nesterov"])


def lr_factor(step: int, total: int, schedule: tuple[float, float, float], shape: str = "linear") -> float:
    """One cycle: start -> 1 linearly over the first `warm` fraction, then -> end, linearly or
    along a half cosine (which stays near the peak longer and anneals gently at the end)."""
    start, warm, end = schedule
    t = step / max(1, total)
    if t < warm:
        return start + (1 - start) * t / warm
    progress = (t - warm) / (1 - warm)
    if shape == "cosine":
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1 + (end - 1) * progress


def set_lr(opt: torch.optim.Optimizer, recipe: dict, step: int, total: int) -> float:
    """Head-only warm-up first (the body's groups get lr 0), then the schedule over the rest."""
    warm = recipe["head_warmup_steps"]
    if step < warm:
        for g in opt.param_groups:
            g["lr"] = recipe["lr"] * g["lr_scale"] if g["name"] == "head" else 0.0
        return recipe["lr"]
    factor = lr_factor(step - warm, total - warm, recipe["schedule"], recipe.get("schedule_shape", "linear"))
    for g in opt.param_groups:
        g["lr"] = recipe["lr"] * g["lr_scale"] * factor
    return recipe["lr"] * factor


class Lookahead:
    """airbench's weight averaging: every 5 steps the weights are pulled to an EMA of
    themselves, with a decay that rises as (progress)^3, so late training averages more."""

    def __init__(self, model: nn.Module):
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        for key, live in model.state_dict().items():
            if live.dtype.is_floating_point:
                self.ema[key].lerp_(live, 1 - decay)
                live.copy_(self.ema[key])


# ---------------------------------------------------------------------------------------------
# Evaluation (no augmentation; test-time augmentation is chosen at export, on validation).
# ---------------------------------------------------------------------------------------------


CPU = Compute(torch.device("cpu"), "fp32")


@torch.no_grad()
def evaluate(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 500, compute: Compute = CPU
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy %) over the whole split."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(images), batch):
        with compute.autocast():
            logits = model(to_float(images[i : i + batch]).to(compute.device)).float().cpu()
        y = torch.from_numpy(labels[i : i + batch])
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return loss / len(images), 100.0 * correct / len(images)


# ---------------------------------------------------------------------------------------------
# Checkpoints and run records.
# ---------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "cpu": cpu_model(), "cpu_flags": relevant_flags(),
            "cores": str(os.cpu_count())}  # fmt: skip


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # a kill mid-write never leaves a broken checkpoint


def measure_speed(
    model: nn.Module, recipe: dict, images: np.ndarray, bs: int, compute: Compute, steps: int = 6
) -> tuple[float, float]:
    """(training, evaluation) images/s on this machine, from a few steps on a copy of the model
    (the run's own weights and optimiser are untouched): what --cycle-minutes sizes the schedule by.
    Each step does what the loop's does, the augmentation on the CPU and the read of the loss
    (which waits for the device) included: on a GPU those, not the network, can set the pace."""
    probe = copy.deepcopy(model)
    opt = make_optimizer(probe, recipe)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(bs)
    y = torch.zeros(bs, dtype=torch.long, device=compute.device)
    steps *= 1 if compute.device.type == "cpu" else 10  # a GPU's steps are short: more of them for a steady figure
    probe.train()
    for i in range(steps + 2):  # two untimed steps: first-call allocations (and cuDNN's algorithm search)
        if i == 2:
            started = time.perf_counter()
        x = augment(to_float(images[:bs]), idx, 0, recipe, 0, gen).to(compute.device)
        with compute.autocast():
            loss = F.cross_entropy(probe(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    train_speed = steps * bs / (time.perf_counter() - started)
    n = min(1000, len(images))
    for _ in range(2):  # timed the second time: the first pays cuDNN's search for the evaluation's shapes
        started = time.perf_counter()
        evaluate(probe, images[:n], np.zeros(n, dtype=np.int64), compute=compute)
    return train_speed, n / (time.perf_counter() - started)


def epochs_for(minutes: float, train_images: int, eval_images: int, speeds: tuple[float, float]) -> int:
    """Whole epochs (training plus the per-epoch evaluation) that fit in `minutes`."""
    per_epoch = train_images / speeds[0] + eval_images / speeds[1]
    return max(1, int(minutes * 60 // per_epoch))


# ---------------------------------------------------------------------------------------------
# The loop, as named steps: set up, build, restore, record, then one epoch at a time (train,
# evaluate, checkpoint) until the schedule ends or the time box would be passed.
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one training run holds between its steps."""

    args: argparse.Namespace
    compute: Compute
    recipe: dict[str, Any]
    run_dir: Path
    ckpt: dict[str, Any] | None
    requested: str
    data: Cifar10
    train_x: np.ndarray
    train_y: np.ndarray
    bs: int
    steps_per_epoch: int
    start: WarmStart | None = None
    built: Any = None
    model: nn.Module | None = None
    opt: torch.optim.Optimizer | None = None
    lookahead: Lookahead | None = None
    teachers: list[str] = field(default_factory=list)
    teacher: torch.Tensor | None = None
    alpha: float = 0.0
    state: dict[str, Any] = field(
        default_factory=lambda: {"epoch": 0, "step": 0, "wall": 0.0, "cpu": 0.0, "history": []}
    )

    @property
    def total_steps(self) -> int:
        return self.recipe["epochs"] * self.steps_per_epoch

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "last.pt"


def compose_recipe(model: str, overrides: dict[str, Any], epochs: int | None, distilled: bool) -> dict[str, Any]:
    """The model's recipe, distillation's values when a teacher is given, then the overrides."""
    recipe = {**RECIPES[model], **(DISTILLATION if distilled else {}), **overrides}
    return {**recipe, "epochs": epochs} if epochs else recipe


def set_up(args: argparse.Namespace) -> Run:
    """The recipe (a resumed run keeps its own), seeds, precision for this machine, and the data."""
    compute = cmp.setup(args.device, "auto")  # joins the process group under torchrun
    recipe = compose_recipe(args.model, json.loads(args.set or "{}"), args.epochs, bool(args.teacher))
    run_dir = Path(args.out or cache_dir() / "runs" / args.model)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    ckpt_path = run_dir / "last.pt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False) if args.resume and ckpt_path.exists() else None
    if ckpt:
        recipe = ckpt["recipe"]  # a resumed run keeps the recipe it started with
    # Chosen per session, not per run: a run resumed on another CPU picks what pays there.
    requested = args.precision or recipe.get("precision") or ("bf16" if recipe.get("bf16") else "fp32")
    compute = Compute(compute.device, cmp.choose_precision(requested, compute.device), compute.rank, compute.world)
    data = load_cifar10(args.data_dir, args.download, args.lossless_dir, args.layout)
    train_x, train_y = data.train.images, data.train.labels
    if args.limit:  # tiny runs for tests: a random (so class-balanced on average) subset
        keep = np.random.default_rng(args.seed).permutation(len(train_y))[: args.limit]
        train_x, train_y = train_x[keep], train_y[keep]
    bs = min(recipe["batch_size"], len(train_x))
    steps_per_epoch = len(train_x) // bs  # drop the ragged last batch: BN wants full batches
    return Run(args, compute, recipe, run_dir, ckpt, requested, data, train_x, train_y, bs, steps_per_epoch)


def size_cycle(run: Run) -> None:
    """One whole schedule (warm-up, peak, anneal to the end value) that fits the time given, so
    that the run ends in a finished model rather than being cut mid-schedule."""
    args, compute, data = run.args, run.compute, run.data
    speeds = measure_speed(run.model, run.recipe, run.train_x, run.bs // compute.world, compute)
    evaluated = len(data.val.labels) + len(data.test.labels) + (len(data.lossless.clean.labels) if data.lossless else 0)
    epochs = epochs_for(args.cycle_minutes, run.steps_per_epoch * run.bs, evaluated,
                        (speeds[0] * compute.world, speeds[1]))  # fmt: skip
    run.recipe["epochs"] = cmp.broadcast(compute, epochs)
    run.recipe["cycle"] = {"minutes": args.cycle_minutes, "train_images_per_s": round(speeds[0] * compute.world, 1),
                           "eval_images_per_s": round(speeds[1], 1)}  # fmt: skip
    print(f"cycle of {args.cycle_minutes} min: {speeds[0] * compute.world:.0f} train / {speeds[1]:.0f} eval "
          f"images/s here -> {run.recipe['epochs']} epochs", flush=True)  # fmt: skip


def build(run: Run) -> None:
    """The network (from the registry or a served graph), its data-fitted parts, the optimiser and
    the teacher's answers."""
    args, compute, ckpt = run.args, run.compute, run.ckpt
    start = (
        None
        if ckpt
        else warm_start(args.init_from, run.train_x, run.data.val, args.threads)
        if args.init_from
        else None
    )
    if start:  # the network and its options come from the served graph (or its checkpoint)
        run.recipe["model"] = {**run.recipe["model"], **start.options}
        built = start.built
    else:
        built = create_model(args.model, **run.recipe["model"])
    run.start, run.built = start, built
    run.model = model = built.model.to(compute.device, memory_format=torch.channels_last)
    if args.cycle_minutes and not ckpt:
        size_cycle(run)
    if isinstance(model, AirbenchNet) and not start:
        model.init_whitening(to_float(random_images(run.train_x, 5000, args.seed)).to(compute.device))
    if isinstance(model, VGG16BN) and model.bn_from_data and not ckpt:
        model.fit_bn_statistics(to_float(random_images(run.train_x, 2000, args.seed)).to(compute.device))
    run.opt = make_optimizer(model, run.recipe)
    run.lookahead = Lookahead(model) if run.recipe["lookahead"] else None
    run.teachers = ckpt.get("teachers", []) if ckpt else [str(Path(t)) for t in args.teacher or []]
    run.alpha = run.recipe["distill_alpha"] if run.teachers else 0.0
    if run.teachers:  # rank 0 computes and caches the teacher's answers; the others then read them
        for turn in (True, False):
            if compute.main == turn:
                run.teacher = torch.from_numpy(
                    teacher_probs([Path(t) for t in run.teachers], run.train_x, args.threads)
                )
            cmp.barrier(compute)


def restore(run: Run) -> None:
    """Continue exactly where the checkpoint stopped; a fresh run starts a fresh log."""
    ckpt = run.ckpt
    if ckpt:
        run.model.load_state_dict(ckpt["model"])
        run.opt.load_state_dict(ckpt["optimizer"])
        if run.lookahead:
            run.lookahead.ema = ckpt["lookahead"]
        run.state = ckpt["state"]
        if "torch_rng" in ckpt:  # dropout draws from it (older checkpoints did not keep it)
            torch.set_rng_state(ckpt["torch_rng"])
        print(f"resumed from {run.ckpt_path} at epoch {run.state['epoch']}", flush=True)
    elif (run.run_dir / "metrics.jsonl").exists() and run.compute.main:
        (run.run_dir / "metrics.jsonl").unlink()


def write_record(run: Run) -> None:
    """run.json: the command, recipe, data, machine and precision; each resume adds its own."""
    args, compute, data, built = run.args, run.compute, run.data, run.built
    record = {"command": " ".join([Path(sys.executable).name, "-m", "training.train", *sys.argv[1:]]),
              "model": args.model, "init": built.init, "pretrained": built.pretrained,
              "recipe": run.recipe, "data": data.source, "layout": data.layout, "train_images": len(run.train_x),
              "val_images": len(data.val.labels),
              "lossless_images": len(data.lossless.clean.labels) if data.lossless else 0,
              "seed": args.seed, "threads": args.threads,
              "precision": {"requested": run.requested, "used": compute.precision}, "compute": compute.describe(),
              "environment": environment()}  # fmt: skip
    if run.start:
        record["warm_start"] = run.start.record
    if run.teachers:
        record["distillation"] = {"teachers": [{"file": Path(t).name, "sha256": hashlib.sha256(Path(t).read_bytes()).hexdigest()}
                                               for t in run.teachers],
                                  "alpha": run.alpha, "temperature": run.recipe["distill_temperature"]}  # fmt: skip
    if run.ckpt and (run.run_dir / "run.json").exists():  # keep the command that started the run
        first = json.loads((run.run_dir / "run.json").read_text())
        record["resumed"] = [*first.get("resumed", []), {"command": record["command"], "at_epoch": run.state["epoch"],
                                                           "threads": args.threads, "precision": compute.precision,
                                                           "environment": environment()}]  # fmt: skip
        for key in ("command", "threads", "precision", "compute"):  # what the run started with; each resume its own
            record[key] = first.get(key, record[key])
    if compute.main:
        (run.run_dir / "run.json").write_text(json.dumps(record, indent=2))
    hardware = (
        compute.describe().get("gpu") or f"{cpu_model()}, {' '.join(relevant_flags()) or 'no avx2/avx512/amx flags'}"
    )
    print(f"{args.model}: {built.init}; {len(run.train_x)} train images, {run.total_steps} steps; {compute.device}, "
          f"{compute.world} process(es), precision {compute.precision} ({run.requested}; {hardware})", flush=True)  # fmt: skip


def head_warmup(run: Run, body: list[nn.Parameter], step: int) -> None:
    """During the head-only warm-up the body is frozen and its pretrained BatchNorm statistics kept."""
    warmup = run.recipe["head_warmup_steps"]
    if step < warmup:
        for p in body:
            p.requires_grad = False
        for m in run.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    elif warmup and step == warmup:
        for p in body:
            p.requires_grad = True
        run.model.train()


def batch_loss(run: Run, loss_fn: nn.Module, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The loss against the labels (and the teacher's answers, when distilling) of training images idx."""
    y = torch.from_numpy(run.train_y[idx.numpy()]).to(logits.device, non_blocking=True)
    if run.teacher is None:
        return loss_fn(logits, y)
    return distillation_loss(logits, y, run.teacher[idx].to(logits.device), run.alpha,
                             run.recipe["distill_temperature"], run.recipe["label_smoothing"])  # fmt: skip


def train_epoch(
    run: Run, trained: nn.Module, loss_fn: nn.Module, body: list[nn.Parameter]
) -> tuple[int, float, int, float]:
    """One pass over the training images; (images seen, loss sum, right answers, last lr)."""
    args, recipe, compute, model, opt, state = run.args, run.recipe, run.compute, run.model, run.opt, run.state
    epoch, bs = state["epoch"], run.bs
    gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)  # same batches on resume
    order = torch.randperm(len(run.train_x), generator=gen)[: run.steps_per_epoch * bs]
    if isinstance(model, AirbenchNet):  # the whitening bias learns early, then is frozen
        model.whiten.bias.requires_grad = epoch < recipe["whiten_bias_epochs"]
    model.train()
    seen, loss_sum, correct, lr = 0, 0.0, 0, 0.0
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{recipe['epochs']}", disable=not compute.main,
               mininterval=args.progress_seconds, file=sys.stdout)  # fmt: skip
    for i in bar:
        head_warmup(run, body, state["step"])
        lr = set_lr(opt, recipe, state["step"], run.total_steps)
        idx = order[i * bs : (i + 1) * bs]
        # Every process augments the whole batch (same generator), then takes its share.
        x = augment(to_float(run.train_x[idx.numpy()]), idx, epoch, recipe, args.seed, gen)
        x, partner, own = cutmix(x, recipe.get("cutmix", 0), gen)
        share = slice(compute.rank, None, compute.world)
        pasted = None if partner is None else idx[partner][share]
        idx, x = idx[share], x[share].to(compute.device, non_blocking=True)
        y = torch.from_numpy(run.train_y[idx.numpy()]).to(compute.device, non_blocking=True)
        with compute.autocast():
            logits = trained(x)
            loss = batch_loss(run, loss_fn, logits.float(), idx)
            if pasted is not None:  # a cut-mixed image is learned as both its classes, by area
                loss = own * loss + (1 - own) * batch_loss(run, loss_fn, logits.float(), pasted)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        if run.lookahead and state["step"] % 5 == 0:
            run.lookahead.update(model, 0.95**5 * (state["step"] / run.total_steps) ** 3)
        seen += len(y)
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}", lr=f"{lr:.2e}", refresh=False)
    bar.close()
    if run.lookahead and state["step"] == run.total_steps:
        run.lookahead.update(model, 1.0)  # the last step: take the averaged weights
    seen, loss_sum, correct = cmp.sum_all(compute, seen, loss_sum, correct)
    return seen, loss_sum, correct, lr


def log_and_save(run: Run, trained_on: tuple[int, float, int, float], clock: tuple[float, float]) -> None:
    """Rank 0: the epoch's row (train, validation, test and clean hold-out) and the checkpoint."""
    seen, loss_sum, correct, lr = trained_on
    model, data, state, compute = run.model, run.data, run.state, run.compute
    val_loss, val_acc = evaluate(model, data.val.images, data.val.labels, compute=compute)
    test_loss, test_acc = evaluate(model, data.test.images, data.test.labels, compute=compute)
    state["wall"], state["cpu"] = time.time() - clock[0], time.process_time() - clock[1]
    row = {"epoch": state["epoch"], "train_loss": loss_sum / seen, "train_acc": 100 * correct / seen,
           "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
           "lr": lr, "wall_s": round(state["wall"], 1), "cpu_s": round(state["cpu"], 1)}  # fmt: skip
    if data.lossless:  # the clean hold-out: what users' photos look like
        row["lossless_loss"], row["lossless_acc"] = evaluate(
            model, data.lossless.clean.images, data.lossless.clean.labels, compute=compute
        )
    state["history"].append(row)
    with open(run.run_dir / "metrics.jsonl", "a") as log:
        log.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    save_atomic({"model": model.state_dict(), "optimizer": run.opt.state_dict(),
                 "lookahead": run.lookahead.ema if run.lookahead else None, "state": state,
                 "recipe": run.recipe, "name": run.args.model, "init": run.built.init,
                 "pretrained": run.built.pretrained, "teachers": run.teachers,
                 "torch_rng": torch.get_rng_state()}, run.ckpt_path)  # fmt: skip


def finish(run: Run) -> None:
    """final.pt, with every data-parallel process's weight digest (they must agree: the tests check)."""
    ranks = cmp.digests(run.compute, run.model)
    if run.compute.main:
        state = run.state
        state["weights_digest_per_process"] = ranks
        torch.save({"model": run.model.state_dict(), "name": run.args.model, "recipe": run.recipe,
                    "init": run.built.init, "pretrained": run.built.pretrained, "state": state},
                   run.run_dir / "final.pt")  # fmt: skip
        print(f"done: {run.run_dir / 'final.pt'}; {state['wall'] / 60:.1f} min wall, {state['cpu'] / 60:.1f} min CPU")
    cmp.finish(run.compute)


def train(args: argparse.Namespace) -> Path:
    run = set_up(args)
    build(run)
    restore(run)
    write_record(run)
    model, state, compute = run.model, run.state, run.compute
    loss_fn = nn.CrossEntropyLoss(label_smoothing=run.recipe["label_smoothing"])
    clock = (time.time() - state["wall"], time.process_time() - state["cpu"])
    session_start = time.time()
    head_ids = {id(p) for p in model.head.parameters()}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    # DDP under torchrun; the model itself otherwise.
    frozen = bool(run.recipe["head_warmup_steps"] or run.recipe["whiten_bias_epochs"])
    trained = cmp.wrap(model, compute, frozen_at_times=frozen)

    while state["epoch"] < run.recipe["epochs"]:
        epoch_start = time.time()
        trained_on = train_epoch(run, trained, loss_fn, body)
        state["epoch"] += 1
        if compute.main:
            log_and_save(run, trained_on, clock)
        cmp.barrier(compute)
        epoch_minutes = (time.time() - epoch_start) / 60
        used = (time.time() - session_start) / 60
        stop = args.max_minutes and used + epoch_minutes > args.max_minutes and state["epoch"] < run.recipe["epochs"]
        if cmp.broadcast(compute, stop):
            print(f"stopping: another epoch (~{epoch_minutes:.1f} min) would pass --max-minutes; "
                  f"--resume continues", flush=True)  # fmt: skip
            cmp.finish(compute)
            return run.run_dir
    finish(run)
    return run.run_dir


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="airbench", choices=sorted(RECIPES))
    p.add_argument("--data-dir", help="image-folder CIFAR-10 (train/<class>, test/<class>); env CIFAR10_DIR")
    p.add_argument("--download", action="store_true", help="use the official dataset (needs internet)")
    p.add_argument("--lossless-dir", help="the clean hold-out's PNGs and index.csv; env CIFAR10_LOSSLESS_DIR")
    p.add_argument(
        "--layout",
        choices=["split", "full"],
        default="split",
        help="split: 45k train / 5k val (choosing a recipe); full: every image but the clean hold-out (a final model)",
    )
    p.add_argument("--out", help="run directory (default ~/.cache/cifar-onnx/runs/<model>)")
    p.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    p.add_argument("--set", help="JSON overrides of recipe values, e.g. '{\"lr\": 0.5}'")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="auto (the recipe's default): bf16 autocast where the CPU has AMX or AVX512-BF16, else fp32",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--max-minutes", type=float, default=0, help="stop (resumably) before this wall time")
    p.add_argument(
        "--cycle-minutes",
        type=float,
        default=0,
        help="size one whole schedule to this many minutes from the measured speed (overrides epochs)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA, else Apple MPS, else the CPU), or e.g. cpu, cuda:1")
    p.add_argument(
        "--init-from",
        type=Path,
        help="start from a served VGG16-BN graph (its fp32 checkpoint when this machine still has it)",
    )
    p.add_argument(
        "--teacher",
        action="append",
        type=Path,
        help="served ONNX graph(s) to distil from (repeat for an ensemble); cached answers",
    )
    p.add_argument("--progress-seconds", type=float, default=30, help="progress bar refresh interval")
    return p


def main(argv: list[str] | None = None) -> None:
    train(parser().parse_args(argv))


if __name__ == "__main__":
    main()
