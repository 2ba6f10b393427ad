"""How much to trust a prediction: temperature-scaled probabilities and the `unsure` flag.

The `unsure` score is the evidence spread: the top log-probability minus the mean log-probability
over the classes. For one network that is exactly its top logit minus its mean logit, since
log p = z - logsumexp(z); for an ensemble it is the same measure on its averaged probabilities.
On the offline out-of-distribution set it separated CIFAR-10 from other pictures better than the
top probability did (docs/MODEL.md, "Calibration, unsure and explanations").

Both come from the model's metadata (`calibration.temperature`, `unsure.threshold`), fitted on
the validation split by `python -m training.trust`, so a retrained model brings its own. A model
whose metadata has neither is served as exported: temperature 1, never unsure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The smallest probability we take the log of: float32 softmax outputs can be exactly 0.
_FLOOR = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row. For one network log p is its logits less a constant per
    row, so this is exactly temperature scaling of the logits; for an ensemble (a mean of
    probabilities) it scales the ensemble's log-probabilities. The argmax never changes."""
    if temperature == 1.0:
        return probs
    z = np.log(np.maximum(probs.astype(np.float64), _FLOOR)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def temperature_of(metadata: dict[str, Any]) -> float:
    return float(metadata.get("calibration", {}).get("temperature", 1.0))


def threshold_of(metadata: dict[str, Any]) -> float:
    """The evidence spread under which a prediction is flagged (0: never)."""
    return float(metadata.get("unsure", {}).get("threshold", 0.0))


def evidence(probs: np.ndarray) -> np.ndarray:
    """Per row (last axis): top log-probability minus the mean log-probability over the classes."""
    logp = np.log(np.maximum(probs.astype(np.float64), _FLOOR))
    return logp.max(axis=-1) - logp.mean(axis=-1)


def unsure_reason(score: float, threshold: float) -> str | None:
    """None when the evidence reaches the model's threshold, else a sentence for people."""
    if score >= threshold:
        return None
    return (f"The probabilities only compare the ten classes with one another; this image gives little evidence "
            f"for any of them (evidence spread {score:.2f}, below this model's threshold of {threshold:.2f}), so it "
            f"may show something else entirely.")  # fmt: skip
