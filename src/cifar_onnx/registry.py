"""The served models: every `<name>.onnx` in the model directory with its `<name>.json` metadata.

The metadata file is the contract between training and the service: class names in order, the
input tensor's name, size and layout, the output's name, plus accuracy figures and provenance
that `/api/v1/models` passes through. Nothing about a model is hard-coded here.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cifar_onnx.cpu import int8_fusion_is_exact
from cifar_onnx.trust import apply_temperature, temperature_of, threshold_of


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

    def raw(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N, classes) float32 probabilities as the graph computes
        them, in one ORT call. InferenceSession.run is thread-safe: one session serves all."""
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The calibrated probabilities: what every route serves."""
        return apply_temperature(self.raw(batch), self.temperature)


def fuse_int8(setting: str = "auto") -> bool:
    """auto: fuse the int8 QDQ pattern into integer kernels only where they are exact (cifar_onnx.cpu);
    elsewhere ONNX Runtime runs each quantised op as dequantise -> float op -> quantise: the
    same int8 model and answers, slower. on/off force it."""
    if setting not in ("auto", "on", "off"):
        raise ModelError(f"int8_fusion must be auto, on or off, not {setting!r}")
    return int8_fusion_is_exact() if setting == "auto" else setting == "on"


def session_options(threads: int, int8_fusion: str = "auto") -> ort.SessionOptions:
    """How every ONNX Runtime session of the project is made (service, export, benchmarks)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not fuse_int8(int8_fusion):
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options


def load_model(onnx_path: Path, threads: int, int8_fusion: str = "auto") -> ServedModel:
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
        raise ModelError(f"{meta_path}: malformed metadata ({exc!r})") from None

    session = ort.InferenceSession(str(onnx_path), session_options(threads, int8_fusion), providers=["CPUExecutionProvider"])

    # Check the graph against what the metadata promises, so a mismatch fails at start-up,
    # not on the first request.
    inputs = {i.name: i for i in session.get_inputs()}
    if input_name not in inputs or inputs[input_name].type != "tensor(uint8)" or list(inputs[input_name].shape[1:]) != [size, size, 3]:
        raise ModelError(f"{onnx_path.name}: the graph's input is not uint8 (N, {size}, {size}, 3) named {input_name!r}")
    outputs = {o.name: o for o in session.get_outputs()}
    if output_name not in outputs or outputs[output_name].shape[-1] != len(classes):
        raise ModelError(f"{onnx_path.name}: the graph has no output {output_name!r} with {len(classes)} classes")
    name = meta.get("name") or onnx_path.stem
    model = ServedModel(name, onnx_path, meta, session, classes, input_name, output_name, size,
                        temperature, threshold)  # fmt: skip
    model.predict(np.zeros((1, size, size, 3), dtype=np.uint8))  # warm-up: first run allocates
    return model


@dataclass
class ModelStore:
    """The loaded models, loaded off the request path; `ready` once all are loaded and warm."""

    model_dir: Path
    threads: int = 1
    default_name: str = ""
    int8_fusion: str = "auto"
    models: dict[str, ServedModel] = field(default_factory=dict)
    error: str | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        try:
            paths = sorted(self.model_dir.glob("*.onnx"))
            if not paths:
                raise ModelError(f"no *.onnx model in {self.model_dir}")
            loaded = [load_model(p, self.threads, self.int8_fusion) for p in paths]
            self.models = {m.name: m for m in loaded}
            if not self.default_name:
                flagged = [m.name for m in loaded if m.metadata.get("default")]
                self.default_name = flagged[0] if flagged else loaded[0].name
            if self.default_name not in self.models:
                raise ModelError(f"the default model {self.default_name!r} is not in {self.model_dir}")
            self._ready.set()
        except Exception as exc:  # reported by /health/ready and the predict routes
            self.error = f"{type(exc).__name__}: {exc}"
            raise

    def load_in_background(self) -> threading.Thread:
        def run() -> None:
            try:
                self.load()
            except Exception:
                pass  # kept in self.error

        thread = threading.Thread(target=run, name="model-loader", daemon=True)
        thread.start()
        return thread

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def get(self, name: str | None = None) -> ServedModel:
        key = name or self.default_name
        if key not in self.models:
            raise UnknownModelError(f"No model named {key!r}; served models: {', '.join(self.models)}.")
        return self.models[key]
