"""Which served model is the default: the rule, and the clean-hold-out accuracy it reads.

    python -m training.choose --candidate model/cifar10 --candidate model/efficientnet_lite0 \\
        --candidate model/airbench --candidate model/vgg16_bn --combine [--write]

The service sees clean photos; the training images are a JPEG q75 copy. So every candidate is
judged on the clean hold-out (training.data: 2,000 lossless training images no run since the
hold-out has trained on) beside JPEG validation, each on the images that *every* candidate held
out (models trained before the hold-out existed saw most of the 2,000: only those that fell in
their 5,000-image validation split count, and the table says how many).

The rule (`choose`): the default is the candidate best on clean validation, unless another is
better on JPEG validation beyond noise. Noise: McNemar's exact test on the paired answers (the
images one model gets right and the other wrong), two-sided, at 5%; the table states the
smallest difference in images that would pass it. A new model or default ships only if it
does not lose on clean validation beyond noise against the one it replaces (`may_replace`).
`--combine` adds every average of two or more candidates (what training.ensemble would build);
`--write` records each served file's clean-hold-out accuracy in its metadata.

The latency guard: a default must answer no slower than the default it is measured against.
Each candidate is timed at batch 1 on one thread as the service would serve it (its own registry,
so the int8 kernels are chosen as in production; an average as the one graph training.ensemble
writes), and a candidate over the bound is shown but never chosen. `--latency-reference` names
the file the bound comes from, timed in the same rounds as the candidates (a shared machine's speed
drifts between sittings by more than the margins in question):

    git show 7add63a:model/cifar10.onnx > /tmp/ref/cifar10.onnx   # the 2026-11-24 default, and its .json
    python -m training.choose --candidate ... --combine --latency-reference /tmp/ref/cifar10

Today's registry times it, so where its own revision ran the reference kernels (CPUs without
VNNI) the bound is the stricter one. `--latency-fraction 0.5` holds candidates to the speed
target instead: half the reference's time. `--latency-bound-ms` takes a number instead, e.g. what
`python -m benchmarks.against 7add63a` prints as "then: batch 1 ms" for `cifar10`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import statistics
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from cifar_onnx import registry
from training.data import Cifar10, add_source_arguments, load_cifar10
from training.ensemble import merge
from training.export import latency_ms, ort_probs, session
from training.holdout import clean_positions, held_out_rows, measure_lossless

REFERENCE = "latency reference"  # its key among the timed models: not a candidate
ALPHA = 0.05  # McNemar's exact two-sided test: below this, a paired difference is not noise


def mcnemar_p(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Exact two-sided McNemar p-value of two classifiers' paired right/wrong answers."""
    a_only = int(np.sum(a_correct & ~b_correct))
    b_only = int(np.sum(b_correct & ~a_correct))
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def beyond_noise(better: np.ndarray, worse: np.ndarray) -> bool:
    """`better` is right more often than `worse` on the same images, and not by chance."""
    return better.sum() > worse.sum() and mcnemar_p(better, worse) < ALPHA


def smallest_significant(discordant: int) -> int:
    """The smallest difference in images (right-only-by-one minus right-only-by-the-other)
    that passes the test when `discordant` images are answered right by exactly one model."""
    for gap in range(discordant % 2, discordant + 1, 2):
        k = (discordant - gap) // 2
        if min(1.0, 2 * sum(math.comb(discordant, i) for i in range(k + 1)) / 2**discordant) < ALPHA:
            return gap
    return discordant + 1  # no split of so few images is significant


@dataclass(frozen=True)
class Answers:
    """One candidate's right/wrong answers on the shared held-out images."""

    clean: np.ndarray  # bool, the clean hold-out (lossless pixels)
    jpeg: np.ndarray  # bool, JPEG validation

    def accuracy(self) -> tuple[float, float]:
        return 100 * float(self.clean.mean()), 100 * float(self.jpeg.mean())


def choose(candidates: dict[str, Answers]) -> str:
    """Best on clean validation (ties: JPEG validation), unless another candidate is better
    on JPEG validation beyond noise; then the next best on clean validation, and so on."""
    order = sorted(candidates, key=lambda n: tuple(-a for a in candidates[n].accuracy()))
    for name in order:
        if not any(beyond_noise(other.jpeg, candidates[name].jpeg) for other in candidates.values()):
            return name
    return order[0]  # unreachable: the best on JPEG validation is never beaten on it


def over_bound(latency_ms: dict[str, float], bound_ms: float) -> set[str]:
    """The candidates the latency guard keeps out: slower than the bound at batch 1."""
    return {name for name, ms in latency_ms.items() if ms > bound_ms}


def choose_within(candidates: dict[str, Answers], latency_ms: dict[str, float], bound_ms: float) -> str | None:
    """The rule among the candidates the latency guard lets be served (None: no candidate is fast
    enough). A slower candidate cannot be served, so it vetoes nothing either."""
    slow = over_bound(latency_ms, bound_ms)
    allowed = {name: a for name, a in candidates.items() if name not in slow}
    return choose(allowed) if allowed else None


def served_latency_ms(groups: dict[str, tuple[Path, ...]], rounds: int = 3, calls: int = 200) -> dict[str, float]:
    """Each candidate's batch-1 median in ms (one thread) as the service serves it: one file, or
    the merged graph of an average, loaded by the service's registry (so its int8 kernels are the
    production choice). Rounds take turns so that a noisy neighbour hurts all alike."""
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for i, (name, members) in enumerate(groups.items()):
            path = members[0].with_suffix(".onnx")
            if len(members) > 1:
                path = Path(tmp) / f"candidate{i}.onnx"
                onnx.save(merge([m.with_suffix(".onnx") for m in members]), str(path))
                shutil.copy(members[0].with_suffix(".json"), path.with_suffix(".json"))
            models[name] = registry.load_model(path, threads=1)
        medians: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                medians[name].append(latency_ms(model.session, calls))
    return {name: round(statistics.median(m), 2) for name, m in medians.items()}


def latency_guard(
    groups: dict[str, tuple[Path, ...]], reference: Path | None, bound_ms: float | None, fraction: float = 1.0
) -> tuple[float | None, dict[str, float] | None]:
    """(bound, each candidate's batch-1 ms): `fraction` of the reference's own time in the same
    rounds when one is given, else the number given; (None, None) when there is no guard."""
    if reference is not None:
        latency = served_latency_ms({REFERENCE: (reference,), **groups})
        return round(fraction * latency.pop(REFERENCE), 2), latency
    return bound_ms, None if bound_ms is None else served_latency_ms(groups)


def may_replace(new: Answers, incumbent: Answers) -> bool:
    """A new model (or default) ships only if it does not lose on clean validation beyond noise."""
    return not beyond_noise(incumbent.clean, new.clean)


def shared_images(metas: list[dict[str, Any]], data: Cifar10) -> tuple[np.ndarray, np.ndarray]:
    """(JPEG validation rows, positions in the clean hold-out) that every candidate held out."""
    rows = held_out_rows(metas[0], data)
    for meta in metas[1:]:
        rows = np.intersect1d(rows, held_out_rows(meta, data))
    clean = np.flatnonzero(np.isin(data.lossless.rows, rows))
    return rows, clean


def answers(probs: dict[str, np.ndarray], rows: np.ndarray, clean: np.ndarray, data: Cifar10) -> Answers:
    return Answers(clean=probs["clean"].argmax(1) == data.lossless.clean.labels[clean],
                   jpeg=probs["jpeg"].argmax(1) == data.full.labels[rows])  # fmt: skip


def table(candidates: dict[str, Answers], chosen: str, latency_ms: dict[str, float] | None = None,
          slow: Collection[str] = ()) -> list[str]:  # fmt: skip
    pick = candidates[chosen]
    columns = ["candidate", "clean hold-out", "JPEG validation", "clean vs chosen: p", "JPEG vs chosen: p"]
    columns += ["batch 1 ms"] if latency_ms is not None else []
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    ranked = sorted(candidates, key=lambda n: tuple(-a for a in candidates[n].accuracy()))
    for name in ranked:
        a = candidates[name]
        clean, jpeg = a.accuracy()
        mark = " (chosen)" if name == chosen else ""
        row = (f"| {name}{mark} | {clean:.2f}% | {jpeg:.2f}% | {mcnemar_p(a.clean, pick.clean):.3f} "
               f"| {mcnemar_p(a.jpeg, pick.jpeg):.3f} |")  # fmt: skip
        if latency_ms is not None:
            row += f" {latency_ms[name]:.2f}{' (over the bound)' if name in slow else ''} |"
        lines.append(row)
    return lines


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", type=Path, action="append", required=True, help="served model path, no suffix")
    p.add_argument("--combine", action="store_true", help="also every average of two or more candidates")
    p.add_argument("--write", action="store_true", help="record each file's clean-hold-out accuracy in its .json")
    guard = p.add_mutually_exclusive_group()
    guard.add_argument("--latency-reference", type=Path,
                       help="served model (no suffix) timed beside the candidates: never choose one slower")  # fmt: skip
    guard.add_argument("--latency-bound-ms", type=float,
                       help="never choose a candidate slower than this at batch 1 (1 thread, as served)")  # fmt: skip
    p.add_argument("--latency-fraction", type=float, default=1.0,
                   help="with --latency-reference: the bound as this fraction of its time (0.5: the speed target)")  # fmt: skip
    add_source_arguments(p)
    p.add_argument("--lossless-dir", help="the clean hold-out; env CIFAR10_LOSSLESS_DIR")
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    if args.latency_fraction != 1.0 and args.latency_reference is None:
        p.error("--latency-fraction scales the time of --latency-reference: give one")
    data = load_cifar10(args.data_dir, args.download, args.lossless_dir)
    if data.lossless is None:
        p.error("the clean hold-out was not found: give --lossless-dir or CIFAR10_LOSSLESS_DIR")
    metas = {str(c): json.loads(c.with_suffix(".json").read_text()) for c in args.candidate}
    rows, clean = shared_images(list(metas.values()), data)
    print(f"shared held-out images: {len(rows):,} JPEG validation, {len(clean):,} clean", flush=True)
    probs = {}
    for path in args.candidate:
        sess = session(path.with_suffix(".onnx"), args.threads)
        probs[str(path)] = {"jpeg": ort_probs(sess, data.full.images[rows]),
                            "clean": ort_probs(sess, data.lossless.clean.images[clean])}  # fmt: skip
        if args.write:
            record_lossless(path, metas[str(path)], sess, data)
    candidates = {name: answers(pr, rows, clean, data) for name, pr in probs.items()}
    groups = {str(path): (path,) for path in args.candidate}
    if args.combine:
        for size in range(2, len(probs) + 1):
            for combo in itertools.combinations(probs, size):
                mean = {k: np.mean([probs[m][k] for m in combo], axis=0) for k in ("jpeg", "clean")}
                candidates[" + ".join(combo)] = answers(mean, rows, clean, data)
                groups[" + ".join(combo)] = tuple(Path(m) for m in combo)
    bound, latency = latency_guard(groups, args.latency_reference, args.latency_bound_ms, args.latency_fraction)
    chosen = choose(candidates) if latency is None else choose_within(candidates, latency, bound)
    if chosen is None:
        p.error(f"no candidate is within the latency bound of {bound} ms: {latency}")
    slow = set() if latency is None else over_bound(latency, bound)
    print("\n".join(table(candidates, chosen, latency, slow)))
    print(f"\nchosen: {chosen}")
    if latency is not None:
        timed = (
            ""
            if args.latency_reference is None
            else (f" ({args.latency_fraction:g}x {args.latency_reference}, timed in the same rounds)")
        )
        print(
            f"latency guard: batch 1 within {bound} ms{timed}, 1 thread, as served; "
            f"{len(slow)} of {len(candidates)} candidates over it"
        )
    print(noise_note(candidates, chosen))


def noise_note(candidates: dict[str, Answers], chosen: str) -> str:
    """What "beyond noise" meant here, in images, against the runner-up on clean validation."""
    ranked = sorted(candidates, key=lambda n: tuple(-a for a in candidates[n].accuracy()))
    pick = candidates[chosen]
    others = [n for n in ranked if n != chosen and not np.array_equal(candidates[n].jpeg, pick.jpeg)]
    if not others:
        return ""
    other = candidates[others[0]]
    lines = [f"Noise: McNemar's exact test, two-sided, p < {ALPHA}, on paired answers; against {others[0]}:"]
    for split in ("clean", "jpeg"):
        a, b = getattr(pick, split), getattr(other, split)
        discordant, gap = int(np.sum(a != b)), smallest_significant(int(np.sum(a != b)))
        verdict = (f"a gap of {gap} of them would be beyond noise" if gap <= discordant else
                   "too few for any gap to be beyond noise")  # fmt: skip
        lines.append(f"  {split}: {int(np.sum(a & ~b))} vs {int(np.sum(b & ~a))} images right by one only; {verdict}")
    return "\n".join(lines)


def record_lossless(path: Path, meta: dict[str, Any], sess: Any, data: Cifar10) -> None:
    """This file's own clean-hold-out accuracy (on every hold-out image it never trained on)."""
    assert data.lossless is not None
    fields = measure_lossless(lambda x: ort_probs(sess, x), data, clean_positions(meta, data))
    meta["accuracy"]["images"]["lossless_val"] = fields.pop("images_lossless_val")
    meta["accuracy"].update(fields)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
