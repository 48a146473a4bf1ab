"""The embedded testbed: generator determinism, answer correctness, tokenizer and processor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zooprune.testbed import (
    EVAL_SEED,
    FAMILIES,
    TRAIN_SEED_BASE,
    answer_from_scene,
    make_sample,
    make_samples,
    question_text,
    write_split,
)
from zooprune.testbed.questions import COUNT_WORDS, LETTERS
from zooprune.testbed.scenes import SIZES, shapes_of


@pytest.fixture(scope="module")
def samples():
    return make_samples(EVAL_SEED, 240)


def test_same_seed_same_data():
    a, b = make_samples(7, 8), make_samples(7, 8)
    for x, y in zip(a, b):
        assert x.image.tobytes() == y.image.tobytes()
        assert (x.question, x.answer, x.scene) == (y.question, y.answer, y.scene)
    c = make_samples(8, 8)
    assert [x.image.tobytes() for x in a] != [x.image.tobytes() for x in c]


def test_sample_depends_only_on_seed_and_index():
    assert make_sample(5, 3).image.tobytes() == make_samples(5, 4)[3].image.tobytes()


def test_training_never_uses_eval_seed():
    assert EVAL_SEED < TRAIN_SEED_BASE


def test_images_and_objects(samples):
    for s in samples[:40]:
        assert s.image.mode == "RGB"
        assert min(s.image.size) >= 224
        for o in shapes_of(s.scene):
            x0, y0, x1, y1 = o["box"]
            assert x1 - x0 == y1 - y0 == SIZES[o["size"]] <= 26
        kinds = {it["kind"] for it in s.scene["items"]}
        assert "checker" in kinds  # at least one salient decoy per scene


def test_all_families_and_pope_splits(samples):
    assert {s.family for s in samples} == set(FAMILIES)
    subs = {s.subfamily for s in samples if s.family == "existence"}
    assert subs == {"random", "popular", "adversarial"}
    assert {s.answer for s in samples if s.family == "existence"} == {"yes", "no"}


def test_answers_follow_from_scene(samples):
    for s in samples:
        assert question_text(s.spec) == s.question
        assert answer_from_scene(s.scene, s.spec) == s.answer
        assert len(s.answer.split()) == 1


def _objs(scene, colour=None, shape=None):
    return [
        o
        for o in shapes_of(scene)
        if (colour is None or o["colour"] == colour) and (shape is None or o["shape"] == shape)
    ]


def test_answers_independently_recomputed(samples):
    """A second, direct reading of the scene description for every family."""
    for s in samples:
        sp, sc = s.spec, s.scene
        if s.family == "existence":
            assert s.answer == ("yes" if _objs(sc, sp["colour"], sp["shape"]) else "no")
        elif s.family == "counting":
            n = len(_objs(sc, sp.get("colour"), sp.get("shape")))
            assert s.answer == COUNT_WORDS[n]
        elif s.family == "spatial":
            (a,) = _objs(sc, sp["colour"], sp["shape"])
            (b,) = _objs(sc, sp["ref_colour"], sp["ref_shape"])
            ax = (a["box"][0] + a["box"][2]) / 2 if sp["subfamily"] == "horizontal" else (a["box"][1] + a["box"][3]) / 2
            bx = (b["box"][0] + b["box"][2]) / 2 if sp["subfamily"] == "horizontal" else (b["box"][1] + b["box"][3]) / 2
            assert s.answer == {("horizontal", True): "left", ("horizontal", False): "right",
                                ("vertical", True): "above", ("vertical", False): "below"}[(sp["subfamily"], ax < bx)]  # fmt: skip
        elif s.family == "reading":
            (tile,) = [it for it in sc["items"] if it["kind"] == "tile"]
            assert s.answer == tile["text"]
        elif s.family in ("attribute", "choice"):
            key = sp["subfamily"]
            (o,) = _objs(sc, sp.get("colour"), sp.get("shape")) if key == "size" else (
                _objs(sc, colour=sp["colour"]) if key == "shape" else _objs(sc, shape=sp["shape"])
            )  # fmt: skip
            value = o[key]
            if s.family == "choice":
                assert s.answer in LETTERS and sp["options"][LETTERS.index(s.answer)] == value
                assert len(set(sp["options"])) == 4
            else:
                assert s.answer == value


def test_write_split(tmp_path):
    path = write_split(tmp_path, seed=3, n=6)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 6
    from PIL import Image

    ref = make_samples(3, 6)
    for row, s in zip(rows, ref):
        assert {"image", "question", "answer", "family"} <= set(row)
        assert np.array_equal(np.asarray(Image.open(tmp_path / row["image"])), np.asarray(s.image))
        assert (row["question"], row["answer"]) == (s.question, s.answer)


def test_processor_prompt(samples):
    from zooprune.testbed.processor import build_processor

    proc = build_processor()
    tok = proc.tokenizer
    for s in samples[:30]:
        ids = tok(s.question)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.unk_token_id != tok.convert_tokens_to_ids(s.answer)
    s = samples[0]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.question}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert prompt.count("<image>") == 1 and prompt.endswith("ASSISTANT:")
    enc = proc(images=s.image, text=prompt, return_tensors="pt")
    assert int((enc["input_ids"] == tok.convert_tokens_to_ids("<image>")).sum()) == 196
    assert tuple(enc["pixel_values"].shape) == (1, 3, 224, 224)


MODEL_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "models" / "testbed-llava"
# indices into make_samples(EVAL_SEED, ...) that the committed model answers correctly (every family)
FIXED_QUESTIONS: tuple[int, ...] = (1, 2, 3, 4, 5, 7, 8, 10, 18, 24)


@pytest.mark.skipif(not (MODEL_DIR / "config.json").exists(), reason="no committed testbed model")
def test_committed_model_answers_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(MODEL_DIR)
    model = LlavaForConditionalGeneration.from_pretrained(MODEL_DIR).eval()
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    assert total < 50 * 2**20
    samples = make_samples(EVAL_SEED, max(FIXED_QUESTIONS) + 1)
    for i in FIXED_QUESTIONS:
        s = samples[i]
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.question}]}]
        prompt = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=s.image, text=prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1] :]
        assert processor.tokenizer.eos_token_id in new.tolist()
        assert processor.tokenizer.decode(new, skip_special_tokens=True).strip() == s.answer, (i, s.question)
