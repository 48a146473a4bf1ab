"""Saved LLaVA checkpoints in the llava-hf key layout (``vision_tower.vision_model.*``).

transformers 5.x ``save_pretrained`` writes a LLaVA / LLaVA-NeXT model's CLIP or SigLIP tower as
``vision_tower.embeddings.*``, ``vision_tower.encoder.*`` (no ``vision_model.``). The published
llava-hf checkpoints, and vLLM's weight loader, use ``vision_tower.vision_model.*``; vLLM rejects
the short form ("There is no module or parameter named 'vision_tower.embeddings'"). transformers
loads both. :func:`to_llava_hf_layout` renames the keys of a saved checkpoint in place, so one
directory loads in transformers and in stock vLLM.
"""

from __future__ import annotations

import json
from pathlib import Path

#: ``config.model_type`` values whose vision tower is a ``*VisionModel`` with a ``vision_model`` inside.
FAMILIES = ("llava", "llava_next")
#: ``vision_config.model_type`` values of such towers.
TOWERS = ("clip_vision_model", "siglip_vision_model")

PREFIX = "vision_tower."
NESTED = "vision_tower.vision_model."


def llava_hf_key(key: str) -> str:
    """``vision_tower.X`` -> ``vision_tower.vision_model.X``; other keys (and nested ones) unchanged."""
    if key.startswith(PREFIX) and not key.startswith(NESTED):
        return NESTED + key[len(PREFIX) :]
    return key


def needs_llava_hf_layout(config: dict) -> bool:
    """Whether a checkpoint with this ``config.json`` content has a tower that vLLM reads as ``vision_model``."""
    return config.get("model_type") in FAMILIES and config.get("vision_config", {}).get("model_type") in TOWERS


def to_llava_hf_layout(directory: str | Path) -> int:
    """Rename a saved checkpoint's vision-tower keys to the llava-hf layout, in place.

    Rewrites every ``*.safetensors`` file of ``directory`` (and ``model.safetensors.index.json`` if
    the checkpoint is sharded), keeping the files' metadata. A no-op for other families and for a
    checkpoint already in that layout.

    Args:
        directory: a ``save_pretrained`` output (``config.json`` + safetensors weights).
    Returns:
        the number of renamed tensors.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    if not needs_llava_hf_layout(config):
        return 0
    renamed = 0
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            metadata = f.metadata()
            keys = list(f.keys())
            if all(llava_hf_key(k) == k for k in keys):
                continue
            tensors = {llava_hf_key(k): f.get_tensor(k) for k in keys}
        renamed += sum(llava_hf_key(k) != k for k in keys)
        tmp = file.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(file)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {llava_hf_key(k): v for k, v in data.get("weight_map", {}).items()}
        index.write_text(json.dumps(data, indent=2) + "\n")
    return renamed
