"""``zooprune.pruned(model, ...)``: prune a model instance you already hold, reversibly.

Only the given instance changes: its ``generate`` and ``forward`` are shadowed by instance
attributes that prune whenever ``pixel_values`` are passed, and removing the handle deletes
them. No class is patched, so other models in the process are untouched.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch
from torch import Tensor, nn

from .adapters import get_adapter
from .config import CropBudget, Fidelity, Keep, PruneConfig
from .pipeline import PreparedInputs, prepare
from .report import PruneReport

HANDLE_ATTR = "_zooprune_handle"


class PruneHandle:
    """Attachment of a :class:`PruneConfig` to one model instance; use as a context manager.

    Attributes:
        reports: the per-image :class:`PruneReport` list of the latest pruned call.
    """

    def __init__(self, model: nn.Module, config: PruneConfig) -> None:
        self.model = model
        self.config = config
        self.adapter = get_adapter(model)
        self.reports: list[PruneReport] = []

    # ---- attach / detach ----------------------------------------------------------------
    def attach(self) -> PruneHandle:
        """Shadow ``generate`` / ``forward`` on the instance; re-attaching replaces an earlier handle."""
        previous = self.model.__dict__.get(HANDLE_ATTR)
        if previous is not None:
            previous.remove()
        self.model.generate = self._bound(self._generate, "generate")
        self.model.forward = self._bound(self._forward, "forward")
        self.model.__dict__[HANDLE_ATTR] = self
        return self

    def _bound(self, impl: Any, name: str) -> Any:
        """``impl`` as a method of the model instance that *looks like* the class's own (same
        signature and docstring), because ``generate`` inspects ``forward``'s parameters."""
        original = getattr(type(self.model), name)

        def method(_model: nn.Module, *args: Any, **kwargs: Any) -> Any:
            return impl(*args, **kwargs)

        functools.update_wrapper(method, original)
        return types.MethodType(method, self.model)

    def remove(self) -> None:
        """Restore the model instance exactly (idempotent)."""
        if self.model.__dict__.get(HANDLE_ATTR) is self:
            for name in ("generate", "forward", HANDLE_ATTR):
                self.model.__dict__.pop(name, None)

    def __enter__(self) -> PruneHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ---- wrapped entry points -----------------------------------------------------------
    def _split(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {k: kwargs.pop(k) for k in self.adapter.vision_input_names if k in kwargs}

    def _prepare(
        self, input_ids: Tensor, attention_mask: Tensor | None, pixel_values: Tensor, kwargs: dict[str, Any]
    ) -> PreparedInputs:
        if input_ids is None:
            raise ValueError("pruning needs input_ids with image placeholder tokens alongside pixel_values")
        prepared = prepare(self.adapter, self.config, input_ids, attention_mask, pixel_values, **self._split(kwargs))
        self.reports = prepared.reports
        return prepared

    def _generate(
        self, input_ids: Tensor | None = None, pixel_values: Tensor | None = None, **kwargs: Any
    ) -> Any:
        model_cls = type(self.model)
        if pixel_values is None:
            return model_cls.generate(self.model, input_ids=input_ids, **kwargs)
        prepared = self._prepare(input_ids, kwargs.pop("attention_mask", None), pixel_values, kwargs)
        with prepared.active():
            out = model_cls.generate(self.model, **prepared.model_kwargs(), **kwargs)
        # Stock generate returns prompt + new tokens; with inputs_embeds it returns new tokens only.
        if isinstance(out, Tensor):
            return torch.cat([input_ids, prepared.new_tokens(out)], dim=1)
        out.sequences = torch.cat([input_ids, prepared.new_tokens(out.sequences)], dim=1)
        return out

    def _forward(
        self, input_ids: Tensor | None = None, pixel_values: Tensor | None = None, **kwargs: Any
    ) -> Any:
        model_cls = type(self.model)
        if pixel_values is None:
            return model_cls.forward(self.model, input_ids=input_ids, **kwargs)
        if kwargs.get("labels") is not None:
            raise ValueError(
                "labels are not supported with pruning: the pruned sequence is shorter than input_ids"
            )
        prepared = self._prepare(input_ids, kwargs.pop("attention_mask", None), pixel_values, kwargs)
        if prepared.plan is not None:
            kwargs.setdefault("use_cache", True)
        with prepared.active():
            return model_cls.forward(self.model, **prepared.model_kwargs(), **kwargs)


def pruned(
    model: nn.Module,
    method: str = "zoo",
    keep: Keep = 64,
    seed: int = 0,
    budget: CropBudget = "per-crop",
    fidelity: Fidelity = "improved",
    **options: Any,
) -> PruneHandle:
    """Prune ``model``'s visual tokens in ``generate`` / ``forward`` calls that pass ``pixel_values``.

    Example::

        with zooprune.pruned(hf_model, method="zoo", keep=0.111) as handle:
            out = hf_model.generate(**processor(images=img, text=prompt, return_tensors="pt"))
        handle.reports[0].kept_indices

    ``generate`` returns the original ``input_ids`` followed by the new tokens, as stock does.
    ``forward`` returns logits over the *pruned* sequence (shorter than ``input_ids``).
    ``fidelity="reference"`` reproduces the method's reference code (``docs/fidelity.md``).
    """
    config = PruneConfig(method=method, keep=keep, seed=seed, options=options, budget=budget, fidelity=fidelity)
    return PruneHandle(model, config).attach()
