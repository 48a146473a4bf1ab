"""zooprune inside vLLM: a ``vllm.general_plugins`` plugin that prunes image tokens in the engine.

``pip install "zooprune[vllm]"`` next to vLLM; vLLM then calls :func:`register` in each of its
processes (entry point ``zooprune = "zooprune.vllm:register"``), which replaces vLLM's
``LlavaForConditionalGeneration``, ``LlavaNextForConditionalGeneration`` and
``Qwen2_5_VLForConditionalGeneration`` by zooprune's
subclasses (registered lazily by name: nothing here imports vLLM). Without a zooprune setting the
models are stock vLLM. See ``docs/vllm.md``.

Files (one job each):
    request.py    deployment default + per-request settings -> a validated PruneConfig; wire format
    budget.py     placeholders per image: a pure function of (visual tokens, grid, configuration)
    processor.py  the multimodal processor: validation (HTTP 400), k placeholders, the plan field
                  (a mixin for every family) and LLaVA-1.5's processor
    next_processor.py  LLaVA-NeXT's processor (anyres placeholder count)
    anyres.py     LLaVA-NeXT's packed layout (crop, position / newline) from the image size
    vision.py     vLLM's vision tower -> features, [CLS] attention and keys (hook, TP gather)
    projector.py  float32 full-weight projector (gathers tensor-parallel shards)
    select.py     per image: PruneContext -> zooprune.pipeline.select_image -> kept tokens
    model.py      the model mixin: projector copy, reports, plans, embed_multimodal
    llava.py      LLaVA-1.5's model class
    llava_next.py LLaVA-NeXT's model class (vLLM's packing, per-crop groups, newlines)
    qwen_processor.py  Qwen2.5-VL's processor (placeholders of the merged grid; pruning-path check)
    qwen2_5_vl.py Qwen2.5-VL's model class (merger features, kept tokens' 3-D positions for vLLM's
                  multimodal-pruning interface)
    reports.py    read the kept tokens back out of the engine (LLM.apply_model)
    engine.py     PrunedVLM's using / generate over a vLLM engine (zooprune eval --engine vllm)
"""

from __future__ import annotations

#: vLLM architecture name -> the zooprune class that replaces it ("module:Class", imported lazily).
MODELS = {
    "LlavaForConditionalGeneration": "zooprune.vllm.llava:ZooLlavaForConditionalGeneration",
    "LlavaNextForConditionalGeneration": "zooprune.vllm.llava_next:ZooLlavaNextForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration": "zooprune.vllm.qwen2_5_vl:ZooQwen2_5_VLForConditionalGeneration",
}


def register() -> None:
    """vLLM plugin entry point: register zooprune's model classes (idempotent, imports no model code)."""
    from vllm import ModelRegistry

    for architecture, target in MODELS.items():
        ModelRegistry.register_model(architecture, target)
