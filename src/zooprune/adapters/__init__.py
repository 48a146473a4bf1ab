"""Model-family adapters, chosen by ``config.model_type`` (one file per family)."""

from __future__ import annotations

from torch import nn

from ..registry import Registry
from .base import ImageTokens, VLMAdapter
from .gemma3 import Gemma3Adapter
from .internvl import InternVLAdapter
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_vl import Qwen2VLAdapter

ADAPTERS: Registry[type[VLMAdapter]] = Registry("model type")
for _cls in (
    LlavaAdapter,
    LlavaNextAdapter,
    LlavaOnevisionAdapter,
    Qwen2VLAdapter,
    InternVLAdapter,
    Gemma3Adapter,
):
    for _model_type in _cls.model_types:
        ADAPTERS.add(_model_type, _cls)


def adapter_class(model_type: str) -> type[VLMAdapter]:
    """The adapter class for a ``config.model_type``; a clear error lists the supported ones."""
    try:
        return ADAPTERS.get(model_type)
    except KeyError:
        raise ValueError(
            f"unsupported model type {model_type!r}; supported model types: {', '.join(ADAPTERS.names())}"
        ) from None


def get_adapter(model: nn.Module) -> VLMAdapter:
    """Build the adapter for one model instance (by ``model.config.model_type``)."""
    return adapter_class(model.config.model_type)(model)


def list_model_types() -> list[str]:
    return ADAPTERS.names()


__all__ = [
    "ADAPTERS",
    "ImageTokens",
    "VLMAdapter",
    "adapter_class",
    "get_adapter",
    "list_model_types",
]
