"""Shared fixtures: tiny random LLaVA checkpoints built offline (no downloads)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub


def random_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A deterministic noise image (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def tiny_llava():
    from zooprune.testing.tiny import tiny_llava as build

    model, processor = build(seed=0)
    return model, processor


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    from zooprune.testing.tiny import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), seed=0)


@pytest.fixture
def images() -> list[Image.Image]:
    return [random_image(1), random_image(2, (64, 30)), random_image(3)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


def load_benchmark_script(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module
