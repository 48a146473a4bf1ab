"""The pruning configuration of one vLLM request: deployment default + per-request override.

Two places set it, both vLLM's own configuration surfaces:

- the deployment default, ``vllm serve MODEL --hf-overrides '{"zooprune": {...}}'`` (it lands on
  the model's ``hf_config.zooprune``; ``--mm-processor-kwargs '{"zooprune": {...}}'`` works too,
  below ``--hf-overrides``);
- per request, ``mm_processor_kwargs={"zooprune": {...}}`` (``LLM.generate`` prompts, or the OpenAI
  server's ``extra_body={"mm_processor_kwargs": {"zooprune": {...}}}``).

Each is a mapping like the keyword arguments of :func:`zooprune.load`: ``method``, ``keep`` (int
count, float ratio, or a string such as ``"64"`` / ``"11.1%"``), ``seed``, ``budget``, and the
method's own options (``estimator``, ``num_directions``, ...; also accepted nested under
``"options"``). The request's keys override the default's; a request that names another method
starts from that method's default options. With neither, the plugin does not prune (stock vLLM).

The resolved configuration travels from the processor (front end) to the model (engine) as a
canonical JSON mapping (:func:`to_wire`), which is also part of vLLM's multimodal cache key.
Pure Python: nothing here imports vLLM.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..config import PruneConfig, parse_keep

#: The key under ``hf_overrides`` / ``mm_processor_kwargs`` that holds zooprune's settings.
KEY = "zooprune"
#: Settings of :class:`PruneConfig` itself (method, keep, seed, budget, ...); every other key is a
#: method option.
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(PruneConfig) if f.name != "options")
#: The configuration when nothing asks for pruning: every token kept.
UNPRUNED = PruneConfig(method="none")


def split_settings(settings: Mapping[str, Any] | None, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{method, keep, seed, budget, **options}`` -> (config fields, method options), type-checked.

    Args:
        settings: the user's mapping (or None).
        where: where it came from, for error messages (e.g. ``"mm_processor_kwargs['zooprune']"``).
    """
    if settings is None:
        return {}, {}
    if not isinstance(settings, Mapping):
        raise TypeError(f"{where} must be a mapping like {{'method': 'zoo', 'keep': 64}}, got {settings!r}")
    fields = {k: settings[k] for k in CONFIG_FIELDS if k in settings}
    options = {k: v for k, v in settings.items() if k not in CONFIG_FIELDS and k != "options"}
    nested = settings.get("options")
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise TypeError(f"{where}['options'] must be a mapping, got {nested!r}")
        options.update(nested)
    if isinstance(fields.get("keep"), str):
        fields["keep"] = parse_keep(fields["keep"])
    return fields, options


def resolve(default: Mapping[str, Any] | None, request: Mapping[str, Any] | None) -> PruneConfig:
    """The validated :class:`PruneConfig` of one request (see the module docstring).

    Raises:
        KeyError: unknown method (the message lists the registered ones).
        ValueError / TypeError: bad budget, seed or option, naming it.
    """
    if not default and not request:
        return UNPRUNED
    d_fields, d_options = split_settings(default, f"hf_overrides['{KEY}']")
    r_fields, r_options = split_settings(request, f"mm_processor_kwargs['{KEY}']")
    fields = {**d_fields, **r_fields}
    new_method = "method" in r_fields and (
        "method" not in d_fields or _canonical(r_fields["method"]) != _canonical(d_fields["method"])
    )
    options = r_options if new_method else {**d_options, **r_options}
    return PruneConfig(**fields, options=options)


def _canonical(method: Any) -> Any:
    from ..methods import get_method

    try:
        return get_method(method).name
    except Exception:
        return method


def to_wire(config: PruneConfig, instruction: list[int] | None = None) -> dict[str, Any]:
    """A canonical JSON-ready mapping of ``config`` (options that differ from their defaults only)
    plus, for methods that read the prompt, the ``instruction`` token ids of the request."""
    defaults = type(config.options)()
    options = {
        f.name: getattr(config.options, f.name)
        for f in dataclasses.fields(config.options)
        if getattr(config.options, f.name) != getattr(defaults, f.name)
    }
    wire: dict[str, Any] = {name: getattr(config, name) for name in CONFIG_FIELDS}
    wire["options"] = options
    if from_wire(wire)[0] != config:
        raise ValueError(f"zooprune: {config!r} does not survive its wire form {wire!r}")
    if instruction is not None:
        wire["instruction"] = [int(t) for t in instruction]
    return wire


def from_wire(wire: Mapping[str, Any]) -> tuple[PruneConfig, list[int] | None]:
    """Inverse of :func:`to_wire`: ``(config, instruction ids or None)``."""
    config = PruneConfig(**{name: wire[name] for name in CONFIG_FIELDS if name in wire}, options=wire["options"])
    return config, wire.get("instruction")


def encode(wire: Mapping[str, Any]) -> Tensor:
    """``wire`` as a ``(L,)`` uint8 tensor of its JSON text (how it rides in vLLM's multimodal kwargs)."""
    data = json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def decode(tensor: Tensor) -> dict[str, Any]:
    """Inverse of :func:`encode`."""
    return json.loads(bytes(tensor.to(torch.uint8).cpu().tolist()).decode())
