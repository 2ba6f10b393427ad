"""The compose `scale` profile, run for real: load through nginx reaches every replica, and a
replica killed under load loses no request.

    bash .ci/container-check.sh        # brings the stack up, then runs this
    python -m benchmarks.scale --project cifar-onnx-check --proxy http://127.0.0.1:18080 [--compare]

Needs a running stack (`docker compose --profile scale up`) and the docker CLI pointed at its
engine. Steps: (1) load through the proxy, then each replica's own /metrics count of predictions
(read inside the container); (2) wrk through the proxy while one replica's process is SIGKILLed
from the host (as a crash: its restart policy brings it back): every request must succeed;
(3) the killed replica is healthy again and the proxy answers. --compare also measures 1 against
3 replicas (restarting nginx, which resolves the replicas when it starts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from pathlib import Path

import httpx

from benchmarks import load

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "tests" / "data" / "cifar" / "ship.jpg"
# Inside a replica: its own count of answered predictions, from the Prometheus text.
COUNT_SCRIPT = (
    "import re, urllib.request; text = urllib.request.urlopen('http://127.0.0.1:8000/metrics').read().decode(); "
    "print(sum(float(v) for v in re.findall(r'^cifar_onnx_requests_total\\{[^}]*path=\"/api/v1/predict\"[^}]*\\} (\\S+)$', text, re.M)))"
)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def replicas(project: str) -> list[str]:
    ids = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", "label=com.docker.compose.service=replica").split()  # fmt: skip
    return sorted(ids)


def served_counts(project: str) -> dict[str, float]:
    return {cid[:12]: float(docker("exec", cid, "python", "-c", COUNT_SCRIPT)) for cid in replicas(project)}


def proxy_failures(project: str) -> list[str]:
    """nginx's access and error log lines that are not a 200 answer: what a failed request met."""
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", "label=com.docker.compose.service=proxy").split()  # fmt: skip
    logs = subprocess.run(
        ["docker", "logs", *ids[:1]], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ).stdout
    return [line for line in logs.splitlines() if '" 200 ' not in line][-30:]


def wait_healthy(project: str, count: int, timeout: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        states = [docker("inspect", "-f", "{{.State.Health.Status}}", cid) for cid in replicas(project)]
        if len(states) == count and all(s == "healthy" for s in states):
            return round(time.monotonic() - start, 1)
        time.sleep(1)
    raise RuntimeError(f"replicas not healthy after {timeout} s: {states}")


def spread(project: str, proxy: str, seconds: float) -> dict:
    before = served_counts(project)
    run = load.wrk(f"{proxy}/api/v1/predict", SAMPLE, 16, seconds, threads=2)
    after = served_counts(project)
    per_replica = {cid: after.get(cid, 0) - before.get(cid, 0) for cid in after}
    return {"load": run, "per_replica": per_replica, "every_replica_served": all(v > 0 for v in per_replica.values())}


def kill_under_load(project: str, proxy: str, seconds: float) -> dict:
    victim = replicas(project)[0]
    pid = docker("inspect", "-f", "{{.State.Pid}}", victim)
    result: dict = {}
    runner = threading.Thread(
        target=lambda: result.update(load.wrk(f"{proxy}/api/v1/predict", SAMPLE, 8, seconds, threads=2))
    )
    runner.start()
    time.sleep(seconds / 3)
    subprocess.run(["kill", "-9", pid], check=True)  # a crash, as the kernel would do it
    killed_at = time.monotonic()
    runner.join()
    wait_healthy(project, 3)
    result["recovered_in_s"] = round(time.monotonic() - killed_at, 1)
    restarts = docker("inspect", "-f", "{{.RestartCount}}", victim)
    answer = httpx.post(
        f"{proxy}/api/v1/predict", files={"file": (SAMPLE.name, SAMPLE.read_bytes(), "image/jpeg")}, timeout=10
    )
    return {"victim": victim[:12], "load": result, "failed": result["errors"], "victim_restarts": int(restarts),
            "proxy_after": answer.status_code}  # fmt: skip


def compare(project: str, compose: list[str], proxy: str, seconds: float) -> dict:
    out = {}
    for count in (1, 3):
        subprocess.run([*compose, "up", "-d", "--scale", f"replica={count}", "--wait"], check=True, capture_output=True)
        subprocess.run([*compose, "restart", "proxy"], check=True, capture_output=True)
        wait_healthy(project, count)
        time.sleep(2)
        # 16 connections: fewer than one replica's places (2 workers + the default queue of 32), so no run sheds.
        out[count] = load.wrk(f"{proxy}/api/v1/predict", SAMPLE, 16, seconds, threads=2)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", required=True, help="the compose project name (-p)")
    p.add_argument("--proxy", required=True, help="the proxy's URL on this machine")
    p.add_argument("--seconds", type=float, default=12)
    p.add_argument("--compare", action="store_true", help="also 1 against 3 replicas")
    p.add_argument("--compose", default="docker-compose", help="the compose command")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)

    results = {"spread": spread(args.project, args.proxy, args.seconds)}
    print("load through the proxy, predictions per replica:", results["spread"]["per_replica"], flush=True)
    results["kill"] = kill_under_load(args.project, args.proxy, args.seconds)
    kill = results["kill"]
    print(f"replica {kill['victim']} killed under load: {kill['load']['requests']} requests, {kill['failed']} failed; "
          f"restarted {kill['victim_restarts']}x, healthy again in {kill['load']['recovered_in_s']} s", flush=True)  # fmt: skip
    if args.compare:
        compose = [*args.compose.split(), "-p", args.project, "--profile", "scale"]
        results["replicas"] = compare(args.project, compose, args.proxy, args.seconds)
        for count, run in results["replicas"].items():
            print(f"{count} replica(s) through the proxy, c=16: {run['rps']} req/s, p50 {run['p50_ms']} ms, "
                  f"{run['errors']} errors", flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    problems = []
    if not results["spread"]["every_replica_served"]:
        problems.append("a replica served no request")
    if kill["failed"] or kill["proxy_after"] != 200:
        kinds = {k.removeprefix("errors_"): v for k, v in kill["load"].items() if k.startswith("errors_") and v}
        problems.append(f"{kill['failed']} requests failed while a replica was killed ({kinds}); "
                        f"the proxy after: {kill['proxy_after']}")  # fmt: skip
        print("the proxy's log, answers other than 200:", *proxy_failures(args.project), sep="\n", flush=True)
    if problems:
        raise SystemExit("; ".join(problems))


if __name__ == "__main__":
    main()
