"""Parse lmms-eval ``--model_args`` for the ``zooprune`` model into typed settings.

lmms-eval turns ``key=value`` pairs into Python values before the model sees them
(``"64"`` -> 64, ``"0.25"`` -> 0.25, ``"true"`` -> True); this module accepts those and plain
strings alike, so the same rules hold when the class is built from Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Keep, parse_keep, validate_keep

#: model_args this plugin reads itself; every other key is a method option (e.g. ``num_directions``).
KNOWN_ARGS = frozenset(
    {
        "pretrained",
        "method",
        "keep",
        "seed",
        "batch_size",
        "device",
        "dtype",
        "max_new_tokens",
        "report",
        "trust_remote_code",
        "fidelity",
    }
)
#: arguments lmms-eval passes to every model, which this plugin has no use for.
IGNORED_ARGS = frozenset({"max_batch_size"})


@dataclass(frozen=True)
class PluginArgs:
    """Settings of one ``zooprune`` model instance.

    Attributes:
        pretrained: checkpoint folder (``save_pretrained`` layout) or hub id.
        method: registered pruning method (``none`` for the unpruned model).
        keep: visual tokens kept per image: int count or float ratio in (0, 1].
        seed: seed of every random draw of the method.
        batch_size: requests per forward pass (per process under ``accelerate launch``).
        device: torch device; None picks ``cuda`` when available, else ``cpu``.
        dtype: model dtype name (``float16``, ``bfloat16``, ``float32``, ``auto``) or None.
        max_new_tokens: generation length when the task does not set one.
        report: optional path of a JSON file summarising visual tokens per document.
        trust_remote_code: allow the checkpoint's own code.
        fidelity: ``improved`` (default) or ``reference`` (reproduce the method's reference code;
            ``docs/fidelity.md``).
        options: method options (``estimator``, ``num_directions``, ``step``, ...).
    """

    pretrained: str
    method: str = "zoo"
    keep: Keep = 64
    seed: int = 0
    batch_size: int = 1
    device: str | None = None
    dtype: str | None = None
    max_new_tokens: int = 128
    report: str | None = None
    trust_remote_code: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    fidelity: str = "improved"


def parse_bool(value: Any, name: str) -> bool:
    """``True``/``False`` or the strings lmms-eval leaves unconverted."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def parse_int(value: Any, name: str, minimum: int) -> int:
    """An int >= ``minimum`` from an int or a string of digits (no floats, no bools)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def parse_keep_arg(value: Any) -> Keep:
    """``keep``: int -> token count, float -> ratio, string -> :func:`zooprune.config.parse_keep`."""
    if isinstance(value, str):
        return parse_keep(value)
    if isinstance(value, bool):
        raise ValueError(f"keep must be a token count or a ratio, got {value!r}")
    return validate_keep(value)


def parse_batch_size(value: Any) -> int:
    """``batch_size``: a positive integer (lmms-eval's ``auto`` is not supported)."""
    if isinstance(value, str) and value.strip().startswith("auto"):
        raise ValueError("batch_size=auto is not supported by the zooprune model; give an integer, e.g. 8")
    return parse_int(value, "batch_size", 1)


def parse_options(method: str, extra: Mapping[str, Any], fidelity: str = "improved") -> dict[str, Any]:
    """Method options as given, checked now by the method's options dataclass (unknown, mistyped or
    ignored options raise ``ValueError`` / ``TypeError`` naming the option and the method), and the
    ``fidelity`` (a method without a reference mode raises ``ValueError`` saying why)."""
    from ..config import PruneConfig

    PruneConfig(method=method, options=dict(extra), fidelity=fidelity)  # type: ignore[arg-type]
    return dict(extra)


def parse_model_args(raw: Mapping[str, Any]) -> PluginArgs:
    """Typed :class:`PluginArgs` from lmms-eval's parsed ``--model_args`` (plus its extra config).

    Raises:
        ValueError: ``pretrained`` missing, or a value of the wrong type or range.
    """
    values = {k: v for k, v in raw.items() if k not in IGNORED_ARGS and v is not None}
    if "pretrained" not in values:
        raise ValueError("model_args needs pretrained=PATH (a checkpoint folder or hub id)")
    method = str(values.get("method", "zoo"))
    fidelity = str(values.get("fidelity", "improved")).strip().lower()
    options = parse_options(method, {k: v for k, v in values.items() if k not in KNOWN_ARGS}, fidelity)
    return PluginArgs(
        pretrained=str(values["pretrained"]),
        method=method,
        keep=parse_keep_arg(values.get("keep", 64)),
        seed=parse_int(values.get("seed", 0), "seed", 0),
        batch_size=parse_batch_size(values.get("batch_size", 1)),
        device=None if values.get("device") in (None, "") else str(values["device"]),
        dtype=None if values.get("dtype") in (None, "") else str(values["dtype"]),
        max_new_tokens=parse_int(values.get("max_new_tokens", 128), "max_new_tokens", 1),
        report=None if values.get("report") in (None, "") else str(values["report"]),
        trust_remote_code=parse_bool(values.get("trust_remote_code", False), "trust_remote_code"),
        options=options,
        fidelity=fidelity,
    )


def merge_cli_config(model_args: Mapping[str, Any], additional: Mapping[str, Any]) -> dict[str, Any]:
    """``--model_args`` first, then lmms-eval's own ``--batch_size`` / ``--device`` where not given.

    lmms-eval always passes its ``--batch_size`` (default 1); a ``batch_size`` in model_args wins.
    """
    merged = dict(model_args)
    for key, value in additional.items():
        if value is not None and key not in merged:
            merged[key] = value
    return merged
