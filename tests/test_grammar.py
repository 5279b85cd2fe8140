"""Scenes and captions without TTS: English, caption-scene consistency over many seeds, splits.

The caption checks parse captions with their own regular expressions and judge every stated
object, count, size, position and relation against the scene's pixels (bounding boxes).
"""

from __future__ import annotations

import re
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from opt.data.grammar import article, describe, noun_phrase, pluralize
from opt.data.prompts import scene_prompt
from opt.data.scenes import COLORS, GRID, SHAPES, plan_dataset, sample_scene

N_SCENES = 400  # scenes per property check
COLOR_RE = "(?:" + "|".join(COLORS) + ")"
NOUN_RE = r"[a-z]+"
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
PHRASE_RE = re.compile(
    rf"(?P<det>an|a|one|two|three) (?:(?P<size>small|large) )?(?P<color>{COLOR_RE}) (?P<noun>{NOUN_RE})"
    r"(?: (?P<where>(?:at|on|in) the [a-z ]+))?$"
)
OPENER_RE = re.compile(r"^In this (?:image|picture) (?:(?:we|I) can see|there (?P<be>is|are)) (?P<body>.+)\.$")
REL = r"(?P<rel>to the left of|to the right of|above|below)"
RELATION_RES = (
    re.compile(rf"^The (?P<s>{COLOR_RE} {NOUN_RE}) is {REL} the (?P<o>{COLOR_RE} {NOUN_RE})\.$"),
    re.compile(
        rf"^(?P<rel>To the left of|To the right of|Above|Below) the (?P<o>{COLOR_RE} {NOUN_RE}) "
        rf"there is (?P<det>an|a) (?P<s>{COLOR_RE} {NOUN_RE})\.$"
    ),
    re.compile(rf"^We can also see the (?P<s>{COLOR_RE} {NOUN_RE}) {REL} the (?P<o>{COLOR_RE} {NOUN_RE})\.$"),
)


def data_cfg(seed: int, n: int, **overrides) -> SimpleNamespace:
    values = dict(seed=seed, n=n, heldout_pairs=6, val_fraction=0.1, test_fraction=0.1, compositional_fraction=0.1)
    return SimpleNamespace(**{**values, **overrides})


def draw_scenes(seed: int, n: int, image_size: int = 64, **overrides) -> tuple[list, object]:
    """(scene, caption) for scenes 0..n-1 of a dataset, drawn as the generator draws them."""
    plan = plan_dataset(data_cfg(seed, n, **overrides))
    out = []
    for scene_plan in plan.scenes:
        rng = np.random.default_rng([seed, scene_plan.index])
        scene = sample_scene(rng, scene_plan, plan.pairs, image_size, 3)
        out.append((scene, describe(scene, rng)))
    return out, plan


def expected_article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def singular_of(noun: str, count: int) -> str:
    """The shape a (possibly plural) noun names; checks number agreement with `count`."""
    for shape in SHAPES:
        plural = shape + ("es" if shape.endswith("s") else "s")
        if noun == (shape if count == 1 else plural):
            return shape
    raise AssertionError(f"noun {noun!r} is no shape in the number {count}")


def cell_of(where: str) -> tuple[int, int]:
    """Grid cell a position phrase names (read from its words, not from the grammar's table)."""
    words = set(where.split())
    row = 0 if "top" in words else 2 if "bottom" in words else 1
    col = 0 if "left" in words else 2 if "right" in words else 1
    return row, col


def holds(a, relation: str, b) -> bool:
    """A relation judged on pixels: boxes strictly apart along the axis."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.bbox, b.bbox
    return {"left of": ax1 <= bx0, "right of": ax0 >= bx1, "above": ay1 <= by0, "below": ay0 >= by1}[relation]


def check_listing(scene, sentence: str) -> None:
    match = OPENER_RE.match(sentence)
    assert match, sentence
    phrases = re.split(r", | and ", match["body"])
    mentioned = Counter()
    for i, text in enumerate(phrases):
        p = PHRASE_RE.match(text)
        assert p, f"unparsed phrase {text!r} in {sentence!r}"
        count = NUMBERS[p["det"]]
        if p["det"] in ("a", "an"):
            assert p["det"] == expected_article(p["size"] or p["color"]), sentence
        if i == 0 and match["be"]:
            assert match["be"] == ("is" if count == 1 else "are"), sentence
        shape = singular_of(p["noun"], count)
        group = [o for o in scene.objects if (o.color, o.shape) == (p["color"], shape)]
        assert len(group) == count, f"{text!r}: scene has {len(group)}"
        if p["size"]:
            assert all(o.size == p["size"] for o in group), sentence
        if p["where"]:
            assert count == 1 and group[0].position == cell_of(p["where"]), sentence
        mentioned[(p["color"], shape)] += count
    assert mentioned == Counter((o.color, o.shape) for o in scene.objects), sentence


def check_relation(scene, sentence: str) -> None:
    match = next((m for m in (r.match(sentence) for r in RELATION_RES) if m), None)
    assert match, f"unparsed sentence {sentence!r}"
    subject = [o for o in scene.objects if f"{o.color} {o.shape}" == match["s"]]
    obj = [o for o in scene.objects if f"{o.color} {o.shape}" == match["o"]]
    assert len(subject) == 1 and len(obj) == 1, f"ambiguous reference in {sentence!r}"
    relation = match["rel"].lower().replace("to the ", "")
    assert holds(subject[0], relation, obj[0]), sentence
    if "det" in match.groupdict():
        assert match["det"] == expected_article(match["s"]), sentence


@pytest.mark.parametrize(
    "word, expected",
    [
        ("orange", "an"),
        ("red", "a"),
        ("apple", "an"),
        ("elephant", "an"),
        ("umbrella", "an"),
        ("unicorn", "a"),
        ("one", "a"),
        ("hour", "an"),
        ("small", "a"),
        ("large", "a"),
        ("egg", "an"),
    ],
)
def test_article_follows_the_sound(word, expected):
    assert article(word) == expected


@pytest.mark.parametrize(
    "noun, plural",
    [
        ("circle", "circles"),
        ("cross", "crosses"),
        ("butterfly", "butterflies"),
        ("key", "keys"),
        ("box", "boxes"),
        ("mouse", "mice"),
        ("leaf", "leaves"),
        ("sheep", "sheep"),
        ("peach", "peaches"),
    ],
)
def test_plurals(noun, plural):
    assert pluralize(noun) == plural


def test_noun_phrases_agree_in_article_and_number():
    assert noun_phrase(1, "orange", "star") == "an orange star"
    assert noun_phrase(1, "orange", "star", "small") == "a small orange star"
    assert noun_phrase(2, "red", "cross") == "two red crosses"
    assert noun_phrase(3, "blue", "circle", "large") == "three large blue circles"


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_caption_states_only_truths_about_its_scene(seed):
    scenes, _ = draw_scenes(seed, N_SCENES)
    for scene, caption in scenes:
        sentences = re.findall(r"[^.]+\.", caption)
        assert "".join(sentences).replace(". ", ".") == caption.replace(". ", "."), caption
        assert 1 <= len(sentences) <= 2, caption
        check_listing(scene, sentences[0].strip())
        for sentence in sentences[1:]:
            check_relation(scene, sentence.strip())


def test_captions_vary_and_use_counts_relations_and_articles():
    captions = [c for _, c in draw_scenes(0, N_SCENES)[0]]
    text = " ".join(captions)
    assert len(set(captions)) > 0.9 * len(captions)
    for needle in (
        "In this image we can see",
        "In this picture I can see",
        "In this image there is",
        "two ",
        "an orange",
        "to the left of",
        "above",
        " there are ",
        " at the top",
    ):
        assert needle in text, needle


def test_scene_geometry_and_vocabulary():
    scenes, _ = draw_scenes(3, N_SCENES)
    shapes, colors, sizes, counts = set(), set(), set(), Counter()
    for scene, _ in scenes:
        counts[len(scene.objects)] += 1
        cells = [o.position for o in scene.objects]
        assert len(set(cells)) == len(cells)
        for o in scene.objects:
            x0, y0, x1, y1 = o.bbox
            (row, col), cell = o.position, 64 / GRID
            assert int(col * cell) <= x0 < x1 <= np.ceil((col + 1) * cell)
            assert int(row * cell) <= y0 < y1 <= np.ceil((row + 1) * cell)
            shapes.add(o.shape), colors.add(o.color), sizes.add(o.size)
        for s, relation, o in scene.relations:
            assert holds(scene.objects[s], relation, scene.objects[o])
        apart = sum(
            (a.position[0] != b.position[0]) + (a.position[1] != b.position[1])
            for i, a in enumerate(scene.objects)
            for b in scene.objects[i + 1 :]
        )
        assert len(scene.relations) == apart  # every true relation is recorded
    assert len(shapes) >= 6 and len(colors) == 8 and sizes == {"small", "large"}
    assert set(counts) == {1, 2, 3}


@pytest.mark.parametrize("seed, n", [(0, 60), (5, 60), (2, 1000)])
def test_splits_keep_heldout_pairs_out_of_train(seed, n):
    scenes, plan = draw_scenes(seed, n)
    heldout = set(plan.pairs.heldout)
    assert len(heldout) == 6
    pairs_by_split: dict[str, set] = {}
    for scene, _ in scenes:
        pairs = {(o.color, o.shape) for o in scene.objects}
        pairs_by_split.setdefault(scene.split, set()).update(pairs)
        if scene.split == "test_compositional":
            assert pairs & heldout, "a compositional scene without a held-out pair"
        else:
            assert not pairs & heldout, f"held-out pair in a {scene.split} scene"
    assert set(pairs_by_split) == {"train", "val", "test", "test_compositional"}
    assert pairs_by_split["val"] | pairs_by_split["test"] <= pairs_by_split["train"]
    assert not pairs_by_split["train"] & pairs_by_split["test_compositional"] & heldout


def test_split_fractions_follow_the_config():
    splits = Counter(s.split for s in plan_dataset(data_cfg(4, 2000)).scenes)
    for name in ("val", "test", "test_compositional"):
        assert abs(splits[name] / 2000 - 0.1) < 0.01, splits


def test_heldout_pairs_depend_on_the_seed():
    assert plan_dataset(data_cfg(0, 10)).pairs.heldout != plan_dataset(data_cfg(1, 10)).pairs.heldout


def test_no_compositional_split_without_heldout_pairs():
    scenes, plan = draw_scenes(0, 100, heldout_pairs=0)
    assert not plan.pairs.heldout
    assert "test_compositional" not in {s.split for s, _ in scenes}


@pytest.mark.parametrize("seed", [0, 1])
def test_prompts_name_only_what_the_scene_has_and_leave_out_what_the_narration_says(seed):
    """Every prompt counts exactly the scene's shapes; it names no colour, size or place, and the
    caption names at least one colour, so the narration always holds something the prompt lacks."""
    scenes, _ = draw_scenes(seed, N_SCENES)
    for scene, caption in scenes:
        record = {"objects": [o.to_record() for o in scene.objects]}
        prompt = scene_prompt(record)
        stated = Counter()
        for phrase in re.split(r", | and ", prompt):
            det, noun = phrase.split(" ")
            shape = next(s for s in SHAPES if noun in (s, pluralize(s)))
            assert (det in ("a", "an")) == (noun == shape), prompt  # singular with an article, plural with a count
            stated[shape] += NUMBERS[det]
        assert stated == Counter(o.shape for o in scene.objects), (prompt, scene.objects)
        said = set(re.findall(r"[a-z]+", caption.lower()))
        left_out = (said & set(COLORS)) - set(prompt.split())
        assert left_out, (prompt, caption)
        assert not set(prompt.split()) & ({"small", "large", "top", "bottom", "left", "right", "middle"} | set(COLORS))
    assert scene_prompt({"caption": "a real narration"}) is None  # no ground truth, no prompt
