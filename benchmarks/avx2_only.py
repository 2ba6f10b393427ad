"""Run a command as if this x86 CPU had AVX2 but no AVX-512, VNNI or AMX.

    python -m benchmarks.avx2_only -- python -m benchmarks.run --seconds 3
    python -m benchmarks.avx2_only --check

Issue #17's figures are stated for AVX2-only CPUs, where ONNX Runtime's fused int8 kernels use
AVX2's pair-summing multiply (the reason for 7-bit weights) instead of VNNI or AMX. Such a CPU is
not always at hand; a newer one can be made to look like one. benchmarks/cpuid_mask.c (compiled
here with gcc, loaded with LD_PRELOAD) masks what the CPUID instruction reports, so every library
picks its AVX2 kernels, which then run natively. In a private mount namespace /proc/cpuinfo is
replaced by a copy without those flags and with "(AVX2 only: masked)" after the model name, so
what the benchmarks record (benchmarks/history.json keeps a row per CPU) names what ran.

What it is not: an AVX2-only CPU's microarchitecture. The same instructions on a 2017 EPYC, a
Zen 3 and this core take different times; RESULTS.md says which one gave each figure.
Needs Linux on x86-64 with CPUID faulting (the cpuid_fault flag; Intel since Ivy Bridge, and KVM
guests), gcc, and root or unprivileged user namespaces (for the bind mount)."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from training.data import cache_dir

SHIM_SOURCE = Path(__file__).with_name("cpuid_mask.c")
MASKED_SUFFIX = " (AVX2 only: masked)"
# /proc/cpuinfo flags the shim hides (the instruction sets VNNI, AVX-512 and AMX and their kin).
MASKED_FLAG = re.compile(r"^(avx512.*|amx_.*|avx_vnni.*|avx_ifma|avx_ne_convert)$")
# glibc picks its string functions from CPUID before any preloaded library runs: its tunables.
GLIBC_TUNABLES = "glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX512_VNNI,-AVX_VNNI"


def masked_cpuinfo(text: str) -> str:
    """/proc/cpuinfo as an AVX2-only CPU would show it: masked flags gone, model names marked."""
    lines = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            value = " " + " ".join(f for f in value.split() if not MASKED_FLAG.match(f))
        elif sep and key.strip() == "model name" and not value.endswith(MASKED_SUFFIX):
            value += MASKED_SUFFIX
        lines.append(f"{key}{sep}{value}" if sep else line)
    return "\n".join(lines) + "\n"


def build_shim() -> Path:
    """The compiled shim, cached by its source's digest."""
    source = SHIM_SOURCE.read_bytes()
    shim = cache_dir() / f"cpuid_mask-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if not shim.exists():
        shim.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(shim), str(SHIM_SOURCE)], check=True)
    return shim


def command_line(cmd: list[str], shim: Path, cpuinfo: Path) -> tuple[list[str], dict[str, str]]:
    """unshare + bind mount over /proc/cpuinfo + the preloaded shim, for `cmd`."""
    mount = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    # Python's faulthandler would take SIGSEGV from the shim and crash at the next CPUID.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    env |= {"LD_PRELOAD": str(shim), "GLIBC_TUNABLES": GLIBC_TUNABLES}
    return ["unshare", "--mount", "--propagation", "private", *user, "sh", "-c", mount, str(cpuinfo), *cmd], env


def unavailable() -> str | None:
    """Why the mask cannot run here, or None where it can (the shim itself would refuse too)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or "cpuid_fault" not in cpuinfo.read_text():
        return "this CPU or kernel has no CPUID faulting (no cpuid_fault flag in /proc/cpuinfo)"
    missing = [tool for tool in ("gcc", "unshare", "mount") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not installed" if missing else None


# Run inside the masked process by --check: what numpy's dispatcher and the CPU file now say.
PROBE = """
import numpy, cifar_onnx.cpu as cpu
seen = numpy._core._multiarray_umath.__cpu_features__
print("numpy sees AVX2:", seen["AVX2"], " AVX512F:", seen["AVX512F"], " AVX512_SKX:", seen["AVX512_SKX"])
print("/proc/cpuinfo:", cpu.cpu_model(), cpu.relevant_flags())
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="show what a masked Python process sees")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if args.check:
        cmd = [sys.executable, "-c", PROBE]
    if not cmd:
        parser.error("give a command after --, or --check")
    if reason := unavailable():
        sys.exit(f"avx2_only: {reason}")
    shim = build_shim()
    with tempfile.TemporaryDirectory() as tmp:
        cpuinfo = Path(tmp) / "cpuinfo"
        cpuinfo.write_text(masked_cpuinfo(Path("/proc/cpuinfo").read_text()))
        full, env = command_line(cmd, shim, cpuinfo)
        return subprocess.run(full, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
