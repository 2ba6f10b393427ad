"""The served models: every `<name>.onnx` in the model directory with its `<name>.json` metadata.

The metadata file is the contract between training and the service: class names in order, the
input tensor's name, size and layout, the output's name, plus accuracy figures and provenance
that `/api/v1/models` passes through. Nothing about a model is hard-coded here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cifar_onnx.cpu import usable_cpus
from cifar_onnx.memory import trim_heap
from cifar_onnx.settings import Settings
from cifar_onnx.trust import apply_temperature, temperature_of, threshold_of

log = logging.getLogger("cifar_onnx")


class ModelError(RuntimeError):
    """A model file or its metadata is missing, malformed or does not fit its contract."""


class UnknownModelError(LookupError):
    pass


@dataclass(frozen=True)
class ServedModel:
    name: str
    path: Path
    metadata: dict[str, Any]
    session: ort.InferenceSession
    classes: tuple[str, ...]
    input_name: str
    output_name: str
    image_size: int
    temperature: float = 1.0  # from the metadata's calibration (cifar_onnx.trust)
    unsure_threshold: float = 0.0  # evidence spread under which a prediction is unsure (cifar_onnx.trust)
    int8_mode: str = ""  # how its int8 operators run here (make_session)
    # The same graph on more ONNX Runtime threads, for a request that finds every inference
    # worker idle (cifar_onnx.batching): it then has every core to itself. None: not made.
    lone: ort.InferenceSession | None = None

    def raw(self, batch: np.ndarray, lone: bool = False) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N, classes) float32 probabilities as the graph computes
        them, in one ORT call. InferenceSession.run is thread-safe: one session serves all."""
        session = self.lone if lone and self.lone is not None else self.session
        return session.run([self.output_name], {self.input_name: batch})[0]

    def predict(self, batch: np.ndarray, lone: bool = False) -> np.ndarray:
        """The calibrated probabilities: what every route serves."""
        return apply_temperature(self.raw(batch, lone), self.temperature)


# What /api/v1/models shows of a model's metadata: what a client needs, never the training
# machine's paths, commands or curves (the full file stays on disk beside the model).
PUBLIC_KEYS = (
    "name",
    "title",
    "default",
    "architecture",
    "classes",
    "input",
    "output",
    "test_time_augmentation",
    "quantization",
    "accuracy",
    "per_class_test_int8",
    "size_bytes",
    "latency_ms_batch1_1thread",
    "parameters",
    "flops_per_image",
    "dataset",
    "sha256",
    "calibration",
    "unsure",
    "explain",
)
PUBLIC_MEMBER_KEYS = ("name", "init", "pretrained", "epochs", "wall_minutes", "cpu_minutes", "tta")


def public_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The public part of a model's metadata, with provenance in words: each member's name, where
    its weights started, how long it trained; the CPU model that trained it."""
    out = {k: meta[k] for k in PUBLIC_KEYS if k in meta}
    out["members"] = [{k: m[k] for k in PUBLIC_MEMBER_KEYS if k in m} for m in meta.get("members", [])]
    if "machine" in meta:
        out["trained_on"] = {k: meta["machine"][k] for k in ("cpu", "cores") if k in meta["machine"]}
    return out


INT8_FUSION_SETTINGS = ("auto", "on", "off")
# Largest mean total-variation distance (half the summed |probability difference|, per image)
# allowed between the fused and the reference int8 kernels on the self-check images. Exact kernels
# differ only by requantisation rounding, several times less (docs/MODEL.md, "int8 on x86 CPUs without VNNI").
SELF_CHECK_TOLERANCE = 0.02


def session_options(threads: int, fused: bool = True) -> ort.SessionOptions:
    """How every ONNX Runtime session of the project is made (service, export, benchmarks).
    fused=False keeps each quantised op as dequantise -> float op -> quantise: the reference
    meaning of the QDQ graph, slower than ONNX Runtime's fused integer kernels."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not fused:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options


@functools.cache
def _shared_arena() -> None:
    """One CPU memory arena for every session the registry makes, registered once per process.
    Each session's own arena keeps the activations of the largest batch it ever ran for good,
    so the served models' peaks added up; shared, the process keeps about the largest of them
    (benchmarks/RESULTS.md, the server's RSS)."""
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, None)


# Run options that hand the arena's unused chunks back after the run: for the self-check, a batch
# larger than a request's, whose activations would otherwise stay resident.
_GIVE_BACK = ort.RunOptions()
_GIVE_BACK.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def _session(path: Path, threads: int, fused: bool) -> ort.InferenceSession:
    _shared_arena()
    options = session_options(threads, fused)
    options.add_session_config_entry("session.use_env_allocators", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def self_check_images(size: int) -> np.ndarray:
    """8 images, the same on every machine: seeded noise, smooth colour fields and flat extremes,
    which drive the int8 kernels over the whole range of activations. Few, because every model
    runs them twice at each start, once on the slow reference kernels; saturating kernels miss by
    several times the tolerance on them (docs/INT8.md)."""
    rng = np.random.default_rng(20261201)
    noise = rng.integers(0, 256, (3, size, size, 3))
    coarse = rng.integers(0, 256, (3, 4, 4, 3))
    smooth = np.stack([np.kron(c, np.ones((size // 4 + 1, size // 4 + 1, 1)))[:size, :size] for c in coarse])
    flat = np.stack([np.zeros((size, size, 3)), np.full((size, size, 3), 255)])
    return np.concatenate([noise, smooth, flat]).astype(np.uint8)


def self_check(fused: ort.InferenceSession, reference: ort.InferenceSession) -> float:
    """Mean total-variation distance between the two sessions' answers on the self-check images."""
    contract = fused.get_inputs()[0]
    size = contract.shape[1] if isinstance(contract.shape[1], int) else 32
    feed = {contract.name: self_check_images(size)}
    answers = [session.run(None, feed, _GIVE_BACK)[0] for session in (fused, reference)]
    return float(np.abs(answers[0] - answers[1]).sum(1).mean() / 2)


def make_session(path: Path, threads: int, int8_fusion: str = "auto") -> tuple[ort.InferenceSession, str]:
    """The session to serve `path` with, and a line saying how its int8 operators run. auto: fused
    integer kernels when they give the reference kernels' answers on the self-check images, else
    the reference kernels. What the CPU computes decides, not a list of its flags: fused u8s8
    kernels saturate on x86 CPUs without VNNI for 8-bit weights (not for 7-bit ones), and a CPU
    nobody has tried is judged the same way. on/off force it."""
    if int8_fusion not in INT8_FUSION_SETTINGS:
        raise ModelError(f"int8_fusion must be auto, on or off, not {int8_fusion!r}")
    if int8_fusion != "auto":
        return _session(
            path, threads, int8_fusion == "on"
        ), f"int8 {'fused' if int8_fusion == 'on' else 'unfused'} (forced)"
    fused = _session(path, threads, True)
    if b"QuantizeLinear" not in path.read_bytes():
        return fused, "no int8 operators"
    difference = self_check(fused, _session(path, 1, False))
    if difference <= SELF_CHECK_TOLERANCE:
        return fused, f"int8 fused (self-check: within {difference:.1e} of the reference kernels)"
    log.warning("%s: fused int8 kernels differ from the reference ones by %.3f (mean total-variation distance on "
                "the self-check images; tolerance %s): serving it unfused, slower but exact",
                path.name, difference, SELF_CHECK_TOLERANCE)  # fmt: skip
    return _session(path, threads, False), f"int8 unfused (self-check: fused kernels off by {difference:.3f})"


def load_named(onnx_path: Path, threads: int, int8_fusion: str = "auto", lone_threads: int = 1) -> ServedModel:
    """`load_model`, with any failure re-raised as a ModelError that names the model, not its path."""
    try:
        return load_model(onnx_path, threads, int8_fusion, lone_threads)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"model {onnx_path.stem!r} could not be loaded ({type(exc).__name__}); is the file whole?"
        ) from exc


def load_model(onnx_path: Path, threads: int, int8_fusion: str = "auto", lone_threads: int = 1) -> ServedModel:
    """A served model: its session on `threads` ONNX Runtime threads a call and, where
    `lone_threads` is more, a second one on that many for requests that come alone."""
    meta_path = onnx_path.with_suffix(".json")
    if not meta_path.exists():
        raise ModelError(f"{onnx_path.name} has no metadata file {meta_path.name} beside it")
    try:
        meta = json.loads(meta_path.read_text())
        classes = tuple(meta["classes"])
        contract = meta["input"]
        size, input_name, output_name = int(contract["size"]), contract["name"], meta["output"]["name"]
        temperature, threshold = temperature_of(meta), threshold_of(meta)
        if not (temperature > 0 and threshold >= 0):
            raise ValueError(f"temperature {temperature} must be > 0 and the unsure threshold {threshold} >= 0")
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{meta_path.name}: malformed metadata ({exc!r})") from None

    session, int8_mode = make_session(onnx_path, threads, int8_fusion)

    # Check the graph against what the metadata promises, so a mismatch fails at start-up,
    # not on the first request.
    inputs = {i.name: i for i in session.get_inputs()}
    if (
        input_name not in inputs
        or inputs[input_name].type != "tensor(uint8)"
        or list(inputs[input_name].shape[1:]) != [size, size, 3]
    ):
        raise ModelError(
            f"{onnx_path.name}: the graph's input is not uint8 (N, {size}, {size}, 3) named {input_name!r}"
        )
    outputs = {o.name: o for o in session.get_outputs()}
    if output_name not in outputs or outputs[output_name].shape[-1] != len(classes):
        raise ModelError(f"{onnx_path.name}: the graph has no output {output_name!r} with {len(classes)} classes")
    name = meta.get("name") or onnx_path.stem
    # Same kernels as the first session (the self-check's verdict); its pool threads spin briefly
    # between calls, ONNX Runtime's default, which is most of what a lone request gains.
    lone = _session(onnx_path, lone_threads, "unfused" not in int8_mode) if lone_threads > threads else None
    model = ServedModel(name, onnx_path, meta, session, classes, input_name, output_name, size,
                        temperature, threshold, int8_mode, lone)  # fmt: skip
    for wide in (False, True) if lone else (False,):  # warm-up: a session's first run allocates
        model.predict(np.zeros((1, size, size, 3), dtype=np.uint8), wide)
    return model


def served_names(model_dir: Path) -> dict[str, Path]:
    """Each served model's name (its metadata's, else the file's stem) and file, read from the
    metadata alone: a cheap check at start, before any model is loaded."""
    names: dict[str, Path] = {}
    for path in sorted(model_dir.glob("*.onnx")) if model_dir.is_dir() else []:
        meta_path = path.with_suffix(".json")
        try:
            name = json.loads(meta_path.read_text()).get("name") or path.stem
        except (OSError, ValueError, AttributeError):
            raise ModelError(
                f"model {path.stem!r}: its metadata {meta_path.name} is missing or not a JSON object"
            ) from None
        names[str(name)] = path
    return names


def check_models(model_dir: Path, default_name: str = "") -> None:
    """Configuration errors that no retry mends, found before serving: no model at all, a model
    without readable metadata, an unknown default. Messages name models and settings, no paths."""
    names = served_names(model_dir)
    if not names:
        raise ModelError("no *.onnx model in the model folder (CIFAR_ONNX_MODEL_DIR)")
    if default_name and default_name not in names:
        raise ModelError(f"CIFAR_ONNX_DEFAULT_MODEL={default_name!r} is not a served model; served: {', '.join(names)}")


def default_of(names: dict[str, Path], given: str = "") -> str:
    """The default among `served_names`: `given`, else the model whose metadata says so, else the first."""
    if given:
        return given
    flagged = [name for name, path in names.items() if json.loads(path.with_suffix(".json").read_text()).get("default")]
    return flagged[0] if flagged else next(iter(names))


@dataclass
class ModelStore:
    """The loaded models, loaded off the request path; `ready` once all are loaded and warm."""

    model_dir: Path
    threads: int = 1
    default_name: str = ""
    int8_fusion: str = "auto"
    lone_threads: int = 1  # Settings.lone_request_threads: the default model's lone session (ServedModel.lone)
    models: dict[str, ServedModel] = field(default_factory=dict)
    error: str | None = None
    load_thread: threading.Thread | None = None  # set by load_in_background
    _ready: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def serving(cls, settings: Settings, lone: bool = True) -> ModelStore:
        """The store as `settings` describe it; `lone=False` makes no lone session (a one-off call)."""
        return cls(settings.model_dir, settings.intra_op_threads, settings.default_model, settings.int8_fusion,
                   settings.lone_request_threads if lone else 1)  # fmt: skip

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        try:
            check_models(self.model_dir, self.default_name)
            paths = sorted(self.model_dir.glob("*.onnx"))
            names = served_names(self.model_dir)
            self.default_name = default_of(names, self.default_name)
            # Only the default has a lone session: most requests use it, and each session holds
            # its own copy of the weights.
            lone_path = names[self.default_name]
            # Most of a model's load is its int8 self-check, which runs in ONNX Runtime without
            # the GIL: loading one model per core in parallel shortens start-up to ready.
            workers = min(len(paths), usable_cpus())
            with ThreadPoolExecutor(workers, thread_name_prefix="model-load") as pool:
                loaded = list(pool.map(lambda path: load_named(path, self.threads, self.int8_fusion,
                                                               self.lone_threads if path == lone_path else 1), paths))  # fmt: skip
            for path, m in zip(paths, loaded, strict=True):
                log.info("loaded %s (%s, sha256 %s): %s; %d ONNX Runtime thread(s) a call", m.name, path.name,
                         str(m.metadata.get("sha256", "?"))[:12], m.int8_mode, self.threads)  # fmt: skip
            self.models = {m.name: m for m in loaded}
            if self.default_name not in self.models:
                raise ModelError(f"the default model {self.default_name!r} is not among those loaded")
            trim_heap()  # what loading freed (cifar_onnx.memory)
            self._ready.set()
            log.info("ready: %d model(s), default %s", len(self.models), self.default_name)
        except Exception as exc:  # reported by /health/ready, /health/live and the predict routes
            # ModelError messages name models, never paths; anything else is named by its type.
            self.error = (
                str(exc) if isinstance(exc, ModelError) else f"loading the models failed ({type(exc).__name__})"
            )
            log.exception("loading the models failed; /health/ready and /health/live answer 503 with: %s", self.error)
            raise

    def load_in_background(self) -> threading.Thread:
        def run() -> None:
            # Logged with its traceback by load, kept in self.error for /health/ready.
            with contextlib.suppress(Exception):
                self.load()

        thread = threading.Thread(target=run, name="model-loader", daemon=True)
        thread.start()
        self.load_thread = thread
        return thread

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def get(self, name: str | None = None) -> ServedModel:
        key = name or self.default_name
        if key not in self.models:
            raise UnknownModelError(f"No model named {key!r}; served models: {', '.join(self.models)}.")
        return self.models[key]
