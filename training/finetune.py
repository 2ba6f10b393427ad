"""Fine-tune the last convolutional block and the classifier of a served VGG16-BN without label
smoothing, starting from its shipped int8 ONNX file, and write a run that `training.export` serves.

    python -m training.finetune --onnx model/vgg16_bn.onnx        # its time: docs/MODEL.md
    python -m training.export --run ~/.cache/cifar-onnx/runs/vgg16_bn_tail --name vgg16_bn --tta 1 \\
        --title "VGG16-BN width 0.5, from scratch, last block re-tuned without label smoothing (int8)"
    python -m training.trust --only vgg16_bn

Why: trained with label smoothing 0.1, the VGG's confidences have a shape that one temperature
cannot fix (docs/MODEL.md, "Calibration"): 71% of the test images sit at a top probability
near 0.91 and are 98.7% right, while the answers between 0.6 and 0.9 are 10 points overconfident
once a temperature sharpens the top. Its best test ECE after temperature scaling was 2.77%. The
smoothing acts through the last layers (it caps the logit gaps the classifier may learn), so those
are re-tuned with plain cross-entropy; the body, which holds most of what was learnt, stays frozen.

Why from the ONNX file: the training checkpoint lived in ~/.cache on another machine and is gone;
the int8 graph is what we serve, and its dequantised weights are the network (BatchNorm was
folded into the convolutions at export, so every BN here is the identity).

1. Rebuild the network from the graph's dequantised weights; check it against ONNX Runtime.
2. Cache the frozen body's output (the input of the last block, 2x2 per image) for `copies`
   augmented copies of the training split (the original recipe's translate, flip and cutout).
3. Train the last block and the classifier on the cache: SGD Nesterov, one-cycle, no smoothing.
4. Write `final.pt` and `run.json` in the run format, keeping the original run's recipe, history
   and command and recording this step under `finetune`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.augment import augment
from training.batches import to_float
from training.data import Cifar10, add_source_arguments, cache_dir, load_cifar10
from training.export import Served, ort_probs, session, torch_probs
from training.models import VGG16BN
from training.train import environment, evaluate
from training.warmstart import rebuild_vgg, served_vgg

HP: dict[str, Any] = {
    "copies": 4,  # augmented copies of the 45,000 training images, cached once (one body pass each)
    "epochs": 2,  # passes over the cache
    "batch_size": 256,
    "lr": 0.01,  # a tenth of the original peak: the block starts from trained weights
    "warmup": 0.1,  # share of the steps spent rising to lr (one-cycle), the rest cosine down
    "momentum": [0.85, 0.95],  # one-cycle moves it against the lr: 0.95 at the start and end, 0.85 at the peak
    "weight_decay": 5e-4,  # the original recipe's
    "label_smoothing": 0.0,  # the point of the exercise
    "seed": 0,
}


# ---------------------------------------------------------------------------------------------
# 1. The network, from the served graph.
# ---------------------------------------------------------------------------------------------


def split_at_last_block(model: VGG16BN) -> int:
    """Index in `features` where the last block starts: just after the second-to-last max-pool."""
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    return pools[-2] + 1


# ---------------------------------------------------------------------------------------------
# 2-3. Cache the body's output, train the tail.
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def body_outputs(
    model: VGG16BN, images: np.ndarray, split: int, recipe: dict, seed: int, batch: int = 500
) -> torch.Tensor:
    """The input of the last block for one augmented copy of every image (as `recipe` augments
    in training), in fp16 to halve the cache (4 copies: 370 MB)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(images), batch):
        x = to_float(images[i : i + batch])
        x = augment(x, torch.arange(i, i + len(x)), 0, recipe, seed, gen)
        out.append(model.features[:split](model.normalize(x)).half())
    return torch.cat(out)


def tail(model: VGG16BN, split: int) -> nn.Sequential:
    """The trained part: the last block and the head (its BN stay the identity, frozen)."""
    part = nn.Sequential(*model.features[split:], model.head)
    for m in part.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.requires_grad_(False)
    return part


def train_tail(part: nn.Sequential, inputs: torch.Tensor, labels: torch.Tensor, hp: dict[str, Any]) -> list[float]:
    """Epochs over the cache; returns the mean training loss of each. Eval mode throughout: the
    BNs are folded constants, and the head's dropout stays off (with it on was not measured)."""
    batch = min(hp["batch_size"], len(inputs))  # tiny runs (tests) still take a step
    params = [p for p in part.parameters() if p.requires_grad]
    low, high = hp["momentum"]
    opt = torch.optim.SGD(params, lr=hp["lr"], momentum=high, nesterov=True, weight_decay=hp["weight_decay"])
    steps = hp["epochs"] * (len(inputs) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, hp["lr"], total_steps=steps, pct_start=hp["warmup"],
                                                   base_momentum=low, max_momentum=high)  # fmt: skip
    gen = torch.Generator().manual_seed(hp["seed"])
    part.eval()
    losses = []
    for epoch in range(hp["epochs"]):
        order, total = torch.randperm(len(inputs), generator=gen), 0.0
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(part(inputs[idx].float()), labels[idx], label_smoothing=hp["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item() * len(idx)
        losses.append(total / (len(order) // batch * batch))
        print(f"epoch {epoch + 1}/{hp['epochs']}: train loss {losses[-1]:.4f}", flush=True)
    return losses


def loss_and_accuracy(model: VGG16BN, data: Cifar10) -> dict[str, tuple[float, float]]:
    """Validation and test (mean cross-entropy, accuracy %), one view, fp32: before against after."""
    return {name: evaluate(model, part.images, part.labels) for name, part in (("val", data.val), ("test", data.test))}


# ---------------------------------------------------------------------------------------------
# 4. The run record.
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--onnx", type=Path, default=Path("model/vgg16_bn.onnx"), help="the served VGG16-BN (its .json beside it)"
    )
    p.add_argument("--out", type=Path, help="run directory (default ~/.cache/cifar-onnx/runs/<name>_tail)")
    p.add_argument("--set", help='JSON overriding HP, e.g. \'{"copies": 1, "epochs": 1}\'')
    p.add_argument("--limit", type=int, default=0, help="use N training images (tests)")
    add_source_arguments(p)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    hp = {**HP, **json.loads(args.set or "{}")}
    torch.set_num_threads(args.threads)
    torch.manual_seed(hp["seed"])
    started_wall, started_cpu = time.time(), time.process_time()

    meta, original = served_vgg(args.onnx)
    recipe = original["recipe"]
    data = load_cifar10(args.data_dir, args.download)
    train_x, train_y = data.train.images, data.train.labels
    if args.limit:
        keep = np.random.default_rng(hp["seed"]).permutation(len(train_y))[: args.limit]
        train_x, train_y = train_x[keep], train_y[keep]

    model = rebuild_vgg(args.onnx, recipe["model"])
    level = meta["test_time_augmentation"]["vgg16_bn"]
    probe = data.val.images[:256]
    served_probs, rebuilt_probs = ort_probs(session(args.onnx), probe), torch_probs(Served([model], [level]), probe)
    agreement = float((served_probs.argmax(1) == rebuilt_probs.argmax(1)).mean())
    drift = float(np.abs(served_probs - rebuilt_probs).max())
    print(f"rebuilt from {args.onnx}: same answer as ONNX Runtime on {100 * agreement:.1f}% of {len(probe)} validation "
          f"images, max |prob diff| {drift:.3f} (int8 activations against fp32)", flush=True)  # fmt: skip
    if agreement < 0.97:
        sys.exit("the rebuilt network does not match the graph; refusing to continue")
    before = loss_and_accuracy(model, data)

    split = split_at_last_block(model)
    start = time.time()
    inputs = torch.cat([body_outputs(model, train_x, split, recipe, hp["seed"] + k) for k in range(hp["copies"])])
    labels = torch.from_numpy(train_y).repeat(hp["copies"])
    print(f"cached the body's output for {len(inputs):,} augmented images in {time.time() - start:.0f} s", flush=True)
    losses = train_tail(tail(model, split), inputs, labels, hp)
    model.eval()
    after = loss_and_accuracy(model, data)
    for split_name in ("val", "test"):
        print(f"{split_name}: loss {before[split_name][0]:.4f} -> {after[split_name][0]:.4f}, "
              f"accuracy {before[split_name][1]:.2f}% -> {after[split_name][1]:.2f}% (one view, fp32)", flush=True)  # fmt: skip

    wall, cpu = time.time() - started_wall, time.process_time() - started_cpu
    finetune = {
        "what": f"last block (features[{split}:]) and classifier re-tuned without label smoothing, body frozen",
        "from": f"{args.onnx} sha256 {meta['sha256']}", "hyperparameters": hp, "train_images": len(train_y),
        "train_loss": [round(x, 4) for x in losses],
        **{name: {"loss_before": round(before[name][0], 4), "loss_after": round(after[name][0], 4),
                  "accuracy_before": round(before[name][1], 2), "accuracy_after": round(after[name][1], 2)}
           for name in ("val", "test")},
        "wall_minutes": round(wall / 60, 1), "cpu_minutes": round(cpu / 60, 1),
        "command": " ".join(["python", "-m", "training.finetune", *(argv if argv is not None else sys.argv[1:])]),
        "environment": environment(),
    }  # fmt: skip
    run_dir = args.out or cache_dir() / "runs" / f"{args.onnx.stem}_tail"
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"epoch": original["epochs"], "wall": 60 * original["wall_minutes"] + wall,
             "cpu": 60 * original["cpu_minutes"] + cpu, "history": original["history"]}  # fmt: skip
    torch.save({"model": model.state_dict(), "name": "vgg16_bn", "recipe": recipe, "init": original["init"],
                "pretrained": original["pretrained"], "state": state, "finetune": finetune}, run_dir / "final.pt")  # fmt: skip
    record = {"command": original.get("command"), "environment": meta.get("machine", {}), "data": original.get("data", data.source),
              "precision": original.get("precision"), "finetune": finetune}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {run_dir / 'final.pt'} ({wall / 60:.1f} min); next: python -m training.export --run {run_dir} "
          f"--name {args.onnx.stem} --tta {level}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
