"""VQA questions and answers derived from a scene's ground truth (the record's `objects`).

Each item gets at most one question of each type (colour, shape, count, existence,
relation), drawn deterministically from a generator seeded by the item's index. Relations
come from the grid geometry: position [row, col], row 0 at the top, "left of" = smaller
column, "above" = smaller row. Objects are named only by descriptions unique in the scene.
A function of the data alone (VQA fine-tunes on these; `opt prepare` trains the tokenizer on them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

QUESTION_TYPES = ("colour", "shape", "count", "existence", "relation")
RELATIONS = ("left of", "right of", "above", "below")
TEMPLATES = {  # every question text is one of these, slots filled from the scene and RELATIONS
    "colour": "what colour is the {shape}?",
    "shape": "what shape is the {color} object?",
    "count": "how many objects are there?",
    "count_colour": "how many {color} objects are there?",
    "existence": "is there {article} {color} {shape}?",
    "relation": "is the {subject} {relation} the {object}?",
}


@dataclass(frozen=True)
class Question:
    kind: str  # one of QUESTION_TYPES
    text: str
    answer: str


def holds(a: dict, relation: str, b: dict) -> bool:
    """Whether object a stands in `relation` to object b, from their grid positions."""
    (ra, ca), (rb, cb) = a["position"], b["position"]
    return {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}[relation]


def unique_by(objects: list[dict], key) -> list[int]:
    """Indices of objects whose key(obj) no other object shares."""
    counts = Counter(key(o) for o in objects)
    return [i for i, o in enumerate(objects) if counts[key(o)] == 1]


def name(o: dict) -> str:
    return f"{o['color']} {o['shape']}"


def attribute_question(objs, rng, kind: str, named_by: str, asked: str) -> Question | None:
    """Ask for `asked` of an object that its `named_by` attribute alone identifies in the scene."""
    pick = unique_by(objs, lambda o: o[named_by])
    if not pick:
        return None
    o = objs[pick[rng.integers(len(pick))]]
    return Question(kind, TEMPLATES[kind].format(**{named_by: o[named_by]}), o[asked])


def colour_question(objs, rng, vocab) -> Question | None:
    return attribute_question(objs, rng, "colour", "shape", "color")


def shape_question(objs, rng, vocab) -> Question | None:
    return attribute_question(objs, rng, "shape", "color", "shape")


def count_question(objs, rng, vocab) -> Question:
    if rng.random() < 0.5 or not vocab["colours"]:
        return Question("count", TEMPLATES["count"], str(len(objs)))
    colour = vocab["colours"][rng.integers(len(vocab["colours"]))]
    n = sum(o["color"] == colour for o in objs)
    return Question("count", TEMPLATES["count_colour"].format(color=colour), str(n))


def existence_question(objs, rng, vocab) -> Question:
    present = {(o["color"], o["shape"]) for o in objs}
    absent = [(c, s) for c in vocab["colours"] for s in vocab["shapes"] if (c, s) not in present]
    if rng.random() < 0.5 or not absent:
        c, s = sorted(present)[rng.integers(len(present))]
    else:
        c, s = absent[rng.integers(len(absent))]
    text = TEMPLATES["existence"].format(article="an" if c[0] in "aeiou" else "a", color=c, shape=s)
    return Question("existence", text, "yes" if (c, s) in present else "no")


def relation_question(objs, rng, vocab) -> Question | None:
    named = unique_by(objs, name)
    pairs = [(i, j) for i in named for j in named if i != j]
    if not pairs:
        return None
    i, j = pairs[rng.integers(len(pairs))]
    true = [r for r in RELATIONS if holds(objs[i], r, objs[j])]
    false = [r for r in RELATIONS if r not in true]
    pool = true if rng.random() < 0.5 and true else false
    relation = pool[rng.integers(len(pool))]
    answer = "yes" if holds(objs[i], relation, objs[j]) else "no"
    text = TEMPLATES["relation"].format(subject=name(objs[i]), relation=relation, object=name(objs[j]))
    return Question("relation", text, answer)


MAKERS = {
    "colour": colour_question,
    "shape": shape_question,
    "count": count_question,
    "existence": existence_question,
    "relation": relation_question,
}


def scene_vocab(records: Iterable[dict]) -> dict:
    """Sorted colours and shapes seen in `records` (the train split's)."""
    objs = [o for r in records for o in r.get("objects") or []]
    return {"colours": sorted({o["color"] for o in objs}), "shapes": sorted({o["shape"] for o in objs})}


def item_questions(record: dict, index: int, vocab: dict) -> list[Question]:
    """Up to one question per type for one item, the same for the same (record, index)."""
    objs = record.get("objects") or []
    if not objs:
        return []
    rng = np.random.default_rng(index)
    out = [MAKERS[kind](objs, rng, vocab) for kind in QUESTION_TYPES]
    return [q for q in out if q is not None]


def split_questions(records: list[dict], vocab: dict) -> list[Question]:
    """Every question of a split's records (item i's from item_questions(record, i))."""
    return [q for i, r in enumerate(records) for q in item_questions(r, i, vocab)]


def answer_vocab(records: list[dict], vocab: dict) -> list[str]:
    """Sorted answers of every question of `records` (train)."""
    return sorted({q.answer for q in split_questions(records, vocab)})


def prior_answers(train: list[Question], questions: list[Question]) -> list[str]:
    """Blind answers: to each question the most common train answer to the same question text,
    else the most common train answer of its type (ties: the answer sorted first)."""

    def most_common(key) -> dict:
        counts: dict = {}
        for q in train:
            counts.setdefault(key(q), Counter())[q.answer] += 1
        return {k: min(c, key=lambda a: (-c[a], a)) for k, c in counts.items()}

    by_text, by_kind = most_common(lambda q: q.text), most_common(lambda q: q.kind)
    return [by_text.get(q.text, by_kind.get(q.kind, "")) for q in questions]
