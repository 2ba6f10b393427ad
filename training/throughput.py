"""Measure training throughput (images/s, forward + backward + SGD step) of registered models,
to choose a width or resolution that fits the CPU budget before spending it.

    python -m training.throughput vgg16_bn --set '{"width": 0.5}' '{"width": 0.75}' --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from training.models import create_model


def images_per_second(name: str, options: dict, batch: int, steps: int, bf16: bool = False, warmup: int = 2) -> float:
    model = create_model(name, pretrained=False, **options).model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--set", nargs="*", default=["{}"], help="model options to compare, one JSON each")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (pays on CPUs with AVX512-BF16 or AMX)")
    p.add_argument("--train-images", type=int, default=45_000, help="to print minutes per epoch")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for options in map(json.loads, args.set):
        rate = images_per_second(args.model, options, args.batch, args.steps, args.bf16)
        print(json.dumps({"model": args.model, **options, "threads": args.threads, "batch": args.batch, "bf16": args.bf16,
                          "img_per_s": round(rate, 1), "min_per_epoch": round(args.train_images / rate / 60, 2)}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
