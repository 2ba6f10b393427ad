"""This checkout against the service as it was at a git revision, on this machine, in one run:
each served model's batch-1 median as that revision's code loads it, and HTTP one image a request
at concurrency 1 and 32 (the same CPU, in one run, against today's code and files).

    python -m benchmarks.against 7add63a            # 3 rounds, 5 s a level
    python -m benchmarks.against 7add63a --rounds 1 --seconds 2

The revision is unpacked with `git archive` (its code and its model files) into a temporary
folder and served from there; the two services take turns, round after round, so that a noisy
neighbour hurts both. Prints a Markdown table and writes benchmarks/against.json (--out: a file per CPU, named
against*.json), which the next `python -m benchmarks.run` puts into RESULTS.md beside the others.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from benchmarks import load
from benchmarks.common import SAMPLE, cpu_label, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Runs inside each side's own code (its src/ first on the path): every model as its registry loads
# it for serving (1 thread), and forced unfused (the reference kernels), each the median of `runs`
# calls on one decoded test image.
MODEL_MEDIANS = """
import json, statistics, sys, time
from pathlib import Path
from cifar_onnx import registry
from cifar_onnx.preprocess import decode_image
image = decode_image(Path(sys.argv[2]).read_bytes())[None]
def median_ms(model):
    for _ in range(20):
        model.predict(image)
    times = []
    for _ in range(int(sys.argv[3])):
        start = time.perf_counter(); model.predict(image); times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 3)
out = {}
for path in sorted(Path(sys.argv[1]).glob("*.onnx")):
    model = registry.load_model(path, threads=1)
    mode = getattr(model, "int8_mode", "") or ("int8 fused" if registry.fuse_int8() else "int8 unfused") + " (CPU-flag rule)"
    out[path.stem] = {"median_ms": median_ms(model), "int8": mode,
                      "unfused_ms": median_ms(registry.load_model(path, threads=1, int8_fusion="off"))}
print(json.dumps(out))
"""


def unpack(rev: str, into: Path) -> Path:
    done = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True)
    if done.returncode:
        raise ValueError(f"git archive {rev}: {done.stderr.decode().strip()}")
    archive = done.stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def side_env(root: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(root / "src")}  # before the installed (editable) package


def model_medians(root: Path, runs: int) -> dict[str, dict]:
    out = subprocess.run([sys.executable, "-c", MODEL_MEDIANS, str(root / "model"), str(SAMPLE), str(runs)],
                         env={**os.environ, **side_env(root)}, cwd=root, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def http_levels(root: Path, seconds: float) -> dict[int, dict]:
    command, env = load.service_command(load.free_port(), root / "model")
    with load.run_server(command, {**env, **side_env(root)}, "/health/ready", cwd=root) as server:
        url = server.url + "/api/v1/predict"
        load.check_answer(url, SAMPLE)
        levels = {}
        for c in (1, 32):
            load.wait_idle(server.url)
            levels[c] = load.wrk(url, SAMPLE, c, seconds)
        return levels


def median_of(rounds: list[dict], *keys: object) -> float:
    values = []
    for r in rounds:
        for k in keys:
            r = r[k]
        values.append(r)
    return round(statistics.median(values), 2)


def summarise(raw: dict[str, dict[str, list]]) -> dict[str, dict]:
    """Per side, the median over rounds of each figure (`raw` as stored in against.json)."""
    sides = {}
    for side, r in raw.items():
        names = r["models"][0]
        models = {n: {"median_ms": median_of(r["models"], n, "median_ms"), "int8": names[n]["int8"],
                      "unfused_ms": median_of(r["models"], n, "unfused_ms")} for n in names}  # fmt: skip
        http = {c: {k: median_of(r["http"], c, k) for k in ("p50_ms", "p99_ms", "rps")} for c in ("1", "32")}
        sides[side] = {"models": models, "http": http}
    return sides


def table(result: dict) -> str:
    old, new = result["sides"]["then"], result["sides"]["now"]
    lines = [f"Then: revision `{result['rev']}`; now: `{result['now_rev']}`. {cpu_label(result['machine'])}, "
             f"{result['machine']['date']}; medians of {result['rounds']} rounds.",
             "", "| model | then: int8 kernels | then: batch 1 ms | now: int8 kernels | now: batch 1 ms | x faster "
             "than then | now forced unfused: ms | x faster than unfused |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name in sorted(set(old["models"]) | set(new["models"])):
        o, n = old["models"].get(name), new["models"].get(name)
        speed = f"{o['median_ms'] / n['median_ms']:.2f}" if o and n else ""
        fusion = f"{n['unfused_ms'] / n['median_ms']:.2f}" if n else ""
        lines.append(f"| `{name}` | {o['int8'] if o else '-'} | {o['median_ms'] if o else '-'} | "
                     f"{n['int8'] if n else '-'} | {n['median_ms'] if n else '-'} | {speed} | "
                     f"{n['unfused_ms'] if n else '-'} | {fusion} |")  # fmt: skip
    lines += ["", "| default model over HTTP | then | now | now / then |", "| --- | --- | --- | --- |"]
    for label, c, key in (("c=1 p50 ms", 1, "p50_ms"), ("c=32 requests/s", 32, "rps"), ("c=32 p99 ms", 32, "p99_ms")):
        a, b = old["http"][str(c)][key], new["http"][str(c)][key]
        lines.append(f"| {label} | {a} | {b} | {b / a:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rev", help="the git revision to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="per HTTP level")
    p.add_argument("--runs", type=int, default=300, help="batch-1 calls per model")
    p.add_argument("--out", type=Path, default=HERE / "against.json")
    args = p.parse_args(argv)
    now_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"then": unpack(args.rev, Path(tmp) / "then"), "now": REPO}
        raw: dict[str, dict[str, list]] = {side: {"models": [], "http": []} for side in roots}
        for i in range(args.rounds):
            for side, root in roots.items():
                raw[side]["models"].append(model_medians(root, args.runs))
                raw[side]["http"].append(http_levels(root, args.seconds))
                print(f"round {i + 1} {side}: {raw[side]['models'][-1]} "
                      f"c=32 {raw[side]['http'][-1][32]['rps']} req/s", flush=True)  # fmt: skip
    sides = summarise(json.loads(json.dumps(raw)))
    result = {"rev": args.rev, "now_rev": now_rev, "machine": machine(), "rounds": args.rounds,
              "seconds": args.seconds, "sides": sides, "raw": raw}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
