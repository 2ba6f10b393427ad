"""benchmarks.avx2_only: a newer x86 CPU made to look AVX2-only, so the figures for such
CPUs can be measured where none is at hand. The end-to-end checks need CPUID faulting (Intel, KVM
guests) and are skipped elsewhere; the int8 kernel check that follows also runs natively."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import avx2_only
from cifar_onnx import cpu
from tests.tiny_model import write_qdq_conv_model

REPO = Path(__file__).resolve().parents[1]
NO_MASK = avx2_only.unavailable()
needs_mask = pytest.mark.skipif(NO_MASK is not None, reason=f"no mask: {NO_MASK}")

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_int8 avx_vnni cpuid_fault

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f
"""

# Loads each QDQ conv the way the service does and prints how its int8 operators run.
SERVE_MODES = """
import json, sys
from pathlib import Path
from cifar_onnx import registry
print(json.dumps({p: registry.make_session(Path(p), 1)[1] for p in sys.argv[1:]}))
"""


def test_masked_cpuinfo_hides_avx512_vnni_and_amx_and_names_the_mask() -> None:
    masked = avx2_only.masked_cpuinfo(CPUINFO)
    flags = [line.split(":", 1)[1].split() for line in masked.splitlines() if line.startswith("flags")]
    assert flags == [["fpu", "sse2", "avx", "avx2", "fma", "cpuid_fault"], ["fpu", "sse2", "avx", "avx2", "fma"]]
    names = [line for line in masked.splitlines() if line.startswith("model name")]
    assert names == ["model name\t: Intel(R) Xeon(R) Processor (AVX2 only: masked)"] * 2
    assert avx2_only.masked_cpuinfo(masked) == masked, "masking twice changes nothing"


def serve_modes(paths: list[Path], masked: bool) -> dict[str, str]:
    command = [sys.executable, "-c", SERVE_MODES, *map(str, paths)]
    if masked:
        command = [sys.executable, "-m", "benchmarks.avx2_only", "--", *command]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def convs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("convs")
    return write_qdq_conv_model(folder, "conv8", 127), write_qdq_conv_model(folder, "conv7", 63)


def test_7_bit_weights_run_fused_here_and_8_bit_ones_only_where_the_cpu_has_vnni(convs: tuple[Path, Path]) -> None:
    """Issue #17's premise, on this machine's own CPU: fused u8s8 kernels are exact with 7-bit
    weights everywhere, and with 8-bit ones only where VNNI (or AMX) sums the pairs without saturating."""
    eight, seven = convs
    modes = serve_modes([eight, seven], masked=False)
    assert modes[str(seven)].startswith("int8 fused (self-check"), modes
    flags = cpu.cpu_flags()
    if "avx2" in flags and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        assert modes[str(eight)].startswith("int8 unfused (self-check"), modes
    elif flags & {"avx512_vnni", "avx_vnni"}:
        assert modes[str(eight)].startswith("int8 fused (self-check"), modes


@needs_mask
def test_a_masked_process_sees_an_avx2_only_cpu() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.avx2_only", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "numpy sees AVX2: True  AVX512F: False" in done.stdout
    assert "(AVX2 only: masked) ['avx2']" in done.stdout


@needs_mask
def test_under_the_mask_8_bit_weights_fall_back_to_unfused_and_7_bit_ones_stay_fused(
    convs: tuple[Path, Path],
) -> None:
    """The mask really selects ONNX Runtime's AVX2 kernels: the saturation that the self-check
    exists for shows up, as it did on a real AVX2-only EPYC (docs/MODEL.md, "int8 on x86 CPUs without VNNI")."""
    eight, seven = convs
    modes = serve_modes([eight, seven], masked=True)
    assert modes[str(eight)].startswith("int8 unfused (self-check: fused kernels off by"), modes
    assert modes[str(seven)].startswith("int8 fused (self-check"), modes
