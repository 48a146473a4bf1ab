"""Checkpoints cross environments: with and without torchvision, every family's saved checkpoint loads
with ``zooprune.load`` whichever processor layout it has, and the image-only fallback is used only
where torchvision is missing. The suite runs in both environments (.ci/run), so each layout below is
loaded both ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import zooprune
from zooprune.compat import (
    IMAGE_ONLY,
    VIDEO_FAMILIES,
    family_processor,
    load_processor,
    torchvision_available,
)
from zooprune.config import PruneConfig
from zooprune.testing.tiny import BUILDERS
from zooprune.vlm import PrunedVLM

from .conftest import random_image

PROMPT = "what is in the image ?"


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def legacy_image_only(folder: Path, model_type: str) -> None:
    """The layout zooprune wrote before: the image-only class named, no video processor."""
    name = IMAGE_ONLY[model_type].__name__

    def change(data: dict) -> None:
        data["processor_class"] = name
        data.pop("video_processor", None)

    edit_json(folder / "processor_config.json", change)
    edit_json(folder / "tokenizer_config.json", lambda d: d.update(processor_class=name))


def hub_full(folder: Path, model_type: str) -> None:
    """The layout a full processor (torchvision installed) writes: its video processor's own settings too."""

    def change(data: dict) -> None:
        video = data.setdefault("video_processor", {"video_processor_type": VIDEO_FAMILIES[model_type][1]})
        video.update({"do_sample_frames": False, "min_frames": 4, "max_frames": 768, "return_metadata": False})

    edit_json(folder / "processor_config.json", change)


LAYOUTS = {"as saved here": lambda folder, model_type: None, "legacy image-only": legacy_image_only, "hub full": hub_full}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def saved(request, tmp_path_factory):
    """A family's tiny model, its in-memory processor and its checkpoint folder."""
    family = request.param
    model, processor = BUILDERS[family](seed=0)
    folder = tmp_path_factory.mktemp(family)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return family, model, processor, folder


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_loads_and_answers_as_the_model_in_memory(saved, layout, tmp_path):
    family, model, processor, folder = saved
    if layout != "as saved here" and family not in VIDEO_FAMILIES:
        pytest.skip("only families whose processor has a video part have other layouts")
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    LAYOUTS[layout](copy, family)
    loaded = zooprune.load(copy, method="zoo", keep=0.5)
    if family not in VIDEO_FAMILIES:
        expected = type(processor)
    else:  # the stock class wherever torchvision is installed, the image-only one elsewhere
        expected = VIDEO_FAMILIES[family][0] if torchvision_available() else IMAGE_ONLY[family]
    assert type(loaded.processor) is expected
    image = random_image(3, (90, 60))
    reference = PrunedVLM(model, processor, PruneConfig("zoo", keep=0.5))
    want = reference.generate([image], [PROMPT], max_new_tokens=4)
    got = loaded.generate([image], [PROMPT], max_new_tokens=4)
    assert got.texts == want.texts
    assert [torch.equal(a.kept_indices, b.kept_indices) for a, b in zip(got.reports, want.reports)] == [True]


def test_what_an_image_only_processor_saves_is_the_stock_layout(tmp_path):
    for family in sorted(VIDEO_FAMILIES):
        _, processor = BUILDERS[family](seed=0)
        processor.save_pretrained(tmp_path / family)
        saved = json.loads((tmp_path / family / "processor_config.json").read_text())
        stock, video_type = VIDEO_FAMILIES[family]
        assert saved["processor_class"] == stock.__name__
        assert saved["video_processor"]["video_processor_type"] == video_type
        assert json.loads((tmp_path / family / "tokenizer_config.json").read_text())["processor_class"] == stock.__name__


@pytest.mark.parametrize("family", sorted(VIDEO_FAMILIES))
def test_the_image_only_fallback_is_used_only_without_torchvision(family, tmp_path):
    _, processor = BUILDERS[family](seed=0)
    built = family_processor(family, processor.image_processor, processor.tokenizer)
    if torchvision_available():
        assert type(built) is VIDEO_FAMILIES[family][0] and built.video_processor is not None
    else:
        assert type(built) is IMAGE_ONLY[family] and getattr(built, "video_processor", None) is None
    processor.save_pretrained(tmp_path)
    assert type(load_processor(str(tmp_path), family)) is type(built)


def test_a_checkpoint_missing_its_tokenizer_names_it(tmp_path):
    _, processor = BUILDERS["qwen2_vl"](seed=0)
    processor.save_pretrained(tmp_path)
    legacy_image_only(tmp_path, "qwen2_vl")  # rebuilt from parts in both environments
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match="no readable tokenizer"):
        load_processor(str(tmp_path), "qwen2_vl")
