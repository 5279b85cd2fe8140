"""The text tokenizer: punctuation is a piece of its own, VQA question words are whole pieces,
and decoding gives the normalised text back."""

from __future__ import annotations

import string

import numpy as np
import pytest

from opt.config import load_config
from opt.data.grammar import describe
from opt.data.manifest import MANIFEST, write_jsonl
from opt.data.prepare import tokenizer_texts
from opt.data.questions import RELATIONS, TEMPLATES, item_questions, scene_vocab
from opt.data.scenes import plan_dataset, sample_scene
from opt.data.text import SPECIAL_TOKENS, UNK, train_tokenizer

VOCAB_SIZE = 300  # experiment=tiny's; the scene grammar needs about 200 to make every word whole
HELDOUT_WORD = "xanthic"  # a colour only a test record has


def pieces(tokenizer, text: str) -> list[str]:
    """The pieces of `text`, without [CLS]/[SEP]/[PAD]."""
    encoding = tokenizer.tokenizer.encode(text, add_special_tokens=False)
    return [t for t, keep in zip(encoding.tokens, encoding.attention_mask) if keep]


def template_words() -> set[str]:
    """Every word a question template writes itself, plus what fills its relation and article slots."""
    literal = " ".join(text for t in TEMPLATES.values() for text, *_ in string.Formatter().parse(t))
    return set(literal.replace("?", " ").split()) | {w for r in RELATIONS for w in r.split()} | {"a", "an"}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """(manifest, records) of 64 generated scenes (no media), plus a test record of a colour never in train."""
    data = load_config(["data.n=64"]).data
    plan = plan_dataset(data)
    records = []
    for scene_plan in plan.scenes:
        rng = np.random.default_rng([int(data.seed), scene_plan.index])
        scene = sample_scene(rng, scene_plan, plan.pairs, int(data.image_size), int(data.max_objects))
        objects = [o.to_record() for o in scene.objects]
        records.append({"caption": describe(scene, rng), "split": scene.split, "objects": objects})
    heldout = {"shape": "circle", "color": HELDOUT_WORD, "size": "large", "position": [1, 1]}
    caption = f"In this image we can see a {HELDOUT_WORD} circle."
    records.append({"caption": caption, "split": "test", "objects": [heldout]})
    manifest = tmp_path_factory.mktemp("text") / MANIFEST
    write_jsonl(manifest, records)
    return manifest, records


@pytest.fixture(scope="module")
def tokenizer(scenes):
    return train_tokenizer(tokenizer_texts(scenes[0]), VOCAB_SIZE, 64)


def test_punctuation_is_a_piece_of_its_own():
    """The pieces of "circle." are that of "circle", then "."; no piece mixes a word with
    punctuation (whitespace-only pre-tokenizing learnt "▁circle." and "▁circle," as pieces)."""
    captions = [
        "In this image we can see a red circle, a blue square and a green star.",
        "In this picture there is a blue circle.",
        "In this image we can see a green square, to the left of a red star.",
        "In this image I can see a star, a circle and a square.",
    ]
    tokenizer = train_tokenizer(captions * 3, VOCAB_SIZE, 64)
    for shape in ("circle", "square", "star"):
        assert pieces(tokenizer, shape) == [f"\u2581{shape}"]
        for mark in ",.":
            assert pieces(tokenizer, f"{shape}{mark}") == [f"\u2581{shape}", mark]
    vocab = set(tokenizer.tokenizer.get_vocab()) - set(SPECIAL_TOKENS)
    assert not [t for t in vocab if any(c.isalpha() for c in t) and any(c in string.punctuation for c in t)]
    assert {",", "."} <= vocab


def test_every_question_template_word_is_one_piece(scenes, tokenizer):
    """Trained on the train captions and questions, each template word, relation, colour and shape
    is one "▁" piece, and no question has [UNK] (captions alone lack "what", "colour", "how" and "?")."""
    manifest, records = scenes
    texts = list(tokenizer_texts(manifest))
    assert not any(HELDOUT_WORD in t for t in texts)  # no held-out split's caption or question
    train = [r for r in records if r["split"] == "train"]
    vocab = scene_vocab(train)
    questions = [q.text for i, r in enumerate(train) for q in item_questions(r, i, vocab)]
    assert set(questions) <= set(texts)
    question_words = set(" ".join(questions).replace("?", " ").split())
    words = template_words() | set(vocab["colours"]) | set(vocab["shapes"])
    assert words <= question_words  # the scenes ask every template (else the check below proves less)
    assert {w: pieces(tokenizer, w) for w in sorted(words)} == {w: [f"\u2581{w}"] for w in sorted(words)}
    for question in questions:
        assert UNK not in pieces(tokenizer, question) and pieces(tokenizer, question)[-1] == "?"


def test_text_with_punctuation_decodes_to_itself(scenes, tokenizer):
    """Punctuation pieces rejoin their word: every caption and question decodes to its lower-cased
    text (before, "?" was [UNK] and decoding dropped it)."""
    _, records = scenes
    caption = "A red circle, left of a blue square."
    ids, _ = tokenizer.encode([caption])
    assert pieces(tokenizer, caption)[2:5] == ["\u2581circle", ",", "\u2581left"]
    assert tokenizer.decode(ids[0]) == "a red circle, left of a blue square."
    train = [r for r in records if r["split"] == "train"]
    vocab = scene_vocab(train)
    questions = [q.text for i, r in enumerate(train) for q in item_questions(r, i, vocab)]
    texts = [r["caption"] for r in records if HELDOUT_WORD not in r["caption"]] + questions
    ids, _ = tokenizer.encode(texts)
    assert [tokenizer.decode(row) for row in ids] == [t.lower() for t in texts]
