"""The two v2 diagnosis scripts: per-patch feature probes and the multiple-choice probe."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import load_benchmark_script


@pytest.fixture(scope="module")
def probes():
    return load_benchmark_script("testbed_feature_probes")


def test_linear_probe_reads_an_encoded_label_and_not_a_random_one(probes):
    rng = np.random.default_rng(0)
    y = rng.integers(4, size=800)
    x = rng.normal(size=(800, 8))
    x[:, 0] += 6.0 * y  # the label is linearly readable from feature 0
    labels = y.astype(str).tolist()
    enc = probes.linear_probe(x[:400], labels[:400], x[400:], labels[400:])
    assert enc["acc"] > 0.9 and enc["n_test"] == 400
    noise = rng.normal(size=(800, 8))
    rnd = probes.linear_probe(noise[:400], labels[:400], noise[400:], labels[400:])
    assert rnd["acc"] < 0.4 and 0.15 < rnd["majority"] < 0.35


def test_patch_labels_follow_the_scene(probes):
    px, labels = probes.patch_labels(seed=5, n=6)
    assert px.shape == (6, 3, 224, 224)
    for lab in labels:
        assert lab["column"][15] == "1" and lab["row"][15] == "1"
        region = lab["region_colour"] != ""
        shape = lab["shape_colour"] != ""
        assert region.any() and not (region & shape).any()  # an item patch has no region label
        assert ((lab["shape_kind"] != "") == shape).all()
        assert not ((lab["digit"] != "") & (region | shape)).any()
    assert any((lab["digit"] != "").any() for lab in labels)


def test_choice_probe_pairs_each_choice_question_with_its_attribute_question():
    probe = load_benchmark_script("testbed_choice_probe")
    pairs = probe.choice_pairs("v2", seed=7, n=12)
    assert 6 <= len(pairs) <= 12
    for choice, attr in pairs:
        assert choice.answer in "ABCD" and "answer with the letter" in choice.question
        assert attr.question == choice.question.split("?")[0] + "?"
        letter_of = dict(zip("ABCD", choice.question.split("?")[1].split()[1::2]))
        assert letter_of[choice.answer] == attr.answer  # the letter names the attribute's value
