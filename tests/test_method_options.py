"""Typed method options: every method declares a dataclass; unknown, mistyped and ignored options are
clear errors naming the option and the method, from Python, the CLI and lmms-eval's model_args."""

from __future__ import annotations

import dataclasses

import pytest

import zooprune
import zooprune.cli
import zooprune.vlm
from zooprune.config import PruneConfig
from zooprune.methods import METHODS, InLLMOptions, MethodOptions
from zooprune.methods.cdpruner import CDPrunerOptions
from zooprune.methods.dart import DartOptions
from zooprune.methods.holov import HoloVOptions
from zooprune.methods.prunesid import PruneSIDOptions
from zooprune.methods.pyramiddrop import PyramidDropOptions
from zooprune.methods.sparsevlm import SparseVLMOptions
from zooprune.methods.visionzip import VisionZipOptions
from zooprune.methods.vispruner import VisPrunerOptions
from zooprune.methods.vscan import VScanOptions
from zooprune.methods.zoo import ZooOptions

from .conftest import random_image

#: What each method takes (a new method must be added here: the test below fails otherwise).
EXPECTED = {
    "cdpruner": CDPrunerOptions,
    "dart": DartOptions,
    "divprune": MethodOptions,
    "fastv": InLLMOptions,
    "holov": HoloVOptions,
    "none": MethodOptions,
    "norm": MethodOptions,
    "pool": MethodOptions,
    "prunesid": PruneSIDOptions,
    "pyramiddrop": PyramidDropOptions,
    "random": MethodOptions,
    "sparsevlm": SparseVLMOptions,
    "visionzip": VisionZipOptions,
    "vispruner": VisPrunerOptions,
    "vscan": VScanOptions,
    "zoo": ZooOptions,
    "zoo-sensitivity": ZooOptions,
}


def test_every_method_declares_its_options_dataclass():
    assert {name: METHODS.get(name).options for name in METHODS.names()} == EXPECTED
    for cls in set(EXPECTED.values()):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
        cls()  # every option has a default


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_unknown_option_is_an_error_naming_option_and_method(method):
    with pytest.raises(ValueError, match=f"unknown option 'colour' for method '{method}'"):
        PruneConfig(method=method, options={"colour": 1})


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_defaults_parse_and_every_field_round_trips(method):
    cls = EXPECTED[method]
    config = PruneConfig(method=method)
    assert type(config.options) is cls and config.options == cls()
    assert list(config.options.to_dict()) == [f.name for f in dataclasses.fields(cls)]
    assert PruneConfig(method=method, options=config.options).options is config.options


def test_a_typo_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown option 'num_direction' for method 'zoo'.*Did you mean 'num_directions'"):
        PruneConfig(method="zoo", options={"estimator": "central", "num_direction": 16})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_directions": 16}, r"option 'num_directions' of method 'zoo' is ignored: the closed-form estimator \(the default\)"),
        ({"step": 0.5}, r"option 'step' of method 'zoo' is ignored: the closed-form estimator \(the default\)"),
        ({"estimator": "closed-form", "num_directions": 64}, "option 'num_directions' of method 'zoo' is ignored"),
        ({"estimator": "jvp", "step": 0.01}, "option 'step' of method 'zoo' is ignored: the jvp estimator"),
    ],
)
def test_options_the_estimator_ignores_are_errors(options, match):
    with pytest.raises(ValueError, match=match):
        PruneConfig(method="zoo", options=options)


def test_options_the_estimator_uses_are_accepted_and_typed():
    opts = PruneConfig(method="zoo", options={"estimator": "central", "num_directions": "16", "step": "0.05"}).options
    assert opts == ZooOptions(estimator="central", num_directions=16, step=0.05)
    assert PruneConfig(method="zoo", options={"estimator": "closed_form"}).options.estimator == "closed-form"
    assert PruneConfig(method="zoo-sensitivity", options={"estimator": "jvp", "num_directions": 8}).options.num_directions == 8


@pytest.mark.parametrize(
    ("method", "options", "error", "match"),
    [
        ("zoo", {"estimator": "central", "num_directions": "many"}, TypeError, "option 'num_directions' of method 'zoo' must be int"),
        ("zoo", {"estimator": "central", "num_directions": 2.5}, TypeError, "must be int, got 2.5"),
        ("zoo", {"estimator": "central", "num_directions": 0}, ValueError, "method 'zoo': num_directions must be >= 1"),
        ("zoo", {"estimator": "central", "step": -1.0}, ValueError, "step must be > 0"),
        ("zoo", {"estimator": "adjoint"}, ValueError, "unknown sensitivity estimator 'adjoint'"),
        ("visionzip", {"merge": "median"}, ValueError, "option 'merge' of method 'visionzip' must be one of 'reference', 'mean'"),
        ("cdpruner", {"negate_relevance": "maybe"}, TypeError, "option 'negate_relevance' of method 'cdpruner' must be bool"),
        ("fastv", {"layer": 0}, ValueError, "method 'fastv': layer must be >= 1"),
        ("dart", {"pivot_image_tokens": True}, TypeError, "must be int"),
    ],
)
def test_bad_values_are_clear_errors(method, options, error, match):
    with pytest.raises(error, match=match):
        PruneConfig(method=method, options=options)


def test_in_llm_layer_and_crop_budget_are_real_fields():
    assert PruneConfig(method="fastv", options={"layer": 1}).options.layer == 1
    assert PruneConfig(method="dart").options.layer == 2
    assert PruneConfig(method="zoo", budget="whole").budget == "whole"
    with pytest.raises(ValueError, match="'budget' is not a method option"):
        PruneConfig(method="zoo", options={"budget": "whole"})
    with pytest.raises(ValueError, match="budget must be 'per-crop' or 'whole'"):
        PruneConfig(method="zoo", budget="crops")


def test_options_of_another_method_are_refused():
    with pytest.raises(TypeError, match="method 'divprune' takes MethodOptions, got ZooOptions"):
        PruneConfig(method="divprune", options=ZooOptions())


def test_switching_method_starts_from_its_own_defaults(tiny_llava):
    model, processor = tiny_llava
    vlm = zooprune.vlm.PrunedVLM(model, processor, PruneConfig("zoo", options={"estimator": "central"}))
    other = vlm.using(method="divprune", keep=4)
    assert other.config.options == MethodOptions() and other.config.method == "divprune"
    assert vlm.config.method == "zoo" and vlm.config.options.estimator == "central"  # untouched
    vlm.configure(num_directions=8)  # same method: options update
    assert vlm.config.options == ZooOptions(estimator="central", num_directions=8)
    with pytest.raises(ValueError, match="'num_directions' of method 'zoo' is ignored"):
        vlm.configure(estimator="closed-form")  # would strand num_directions=8


def test_load_and_cli_reject_ignored_options(tiny_llava_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown option 'num_direction' for method 'zoo'"):
        zooprune.load(tiny_llava_dir, method="zoo", num_direction=16)
    image = tmp_path / "x.png"
    random_image(0).save(image)
    code = zooprune.cli.main(
        ["run", "--model", str(tiny_llava_dir), "--image", str(image), "--prompt", "what ?", "--num-directions", "8"]
    )
    assert code == 2
    assert "option 'num_directions' of method 'zoo' is ignored" in capsys.readouterr().err
