"""Captions of scenes in Localized Narratives' narrative voice ("In this image we can see ...").

A caption lists every object (equal colour-shape objects counted: "two red circles"), may give
the grid position of single objects and may state one spatial relation between two objects
that its words identify uniquely. Everything stated is true of the scene; sizes are stated
only when every object of a group has that size.
"""

from __future__ import annotations

import numpy as np

from opt.data.scenes import Scene

OPENERS = (
    "In this image we can see",
    "In this picture we can see",
    "In this image I can see",
    "In this picture I can see",
    "In this image there {be}",
    "In this picture there {be}",
)
POSITION_PHRASES = {
    (0, 0): "at the top left",
    (0, 1): "at the top",
    (0, 2): "at the top right",
    (1, 0): "on the left",
    (1, 1): "in the middle",
    (1, 2): "on the right",
    (2, 0): "at the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "at the bottom right",
}
RELATION_PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IRREGULAR_PLURALS = {
    "mouse": "mice",
    "goose": "geese",
    "tooth": "teeth",
    "foot": "feet",
    "child": "children",
    "person": "people",
    "man": "men",
    "woman": "women",
    "sheep": "sheep",
    "fish": "fish",
    "deer": "deer",
    "leaf": "leaves",
    "knife": "knives",
    "wolf": "wolves",
    "loaf": "loaves",
}
AN_EXCEPTIONS = ("uni", "use", "usu", "uti", "eu", "one", "once", "ewe")  # vowel letter, consonant sound
A_EXCEPTIONS = ("hour", "honest", "honour", "honor", "heir")  # silent h
MENTION_SIZE_PROBABILITY = 0.6
POSITION_PROBABILITY = 0.5
RELATION_PROBABILITY = 0.7


def article(word: str) -> str:
    """'a' or 'an' for the word that follows (by sound, for the common exceptions)."""
    w = word.lower()
    if w.startswith(A_EXCEPTIONS):
        return "an"
    if w.startswith(AN_EXCEPTIONS):
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


def pluralize(noun: str) -> str:
    """English plural of a noun: circle -> circles, cross -> crosses, butterfly -> butterflies."""
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def number_word(count: int) -> str:
    return NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)


def noun_phrase(count: int, color: str, shape: str, size: str | None = None) -> str:
    """'a small red circle', 'an orange star', 'two large blue squares'."""
    words = ([size] if size else []) + [color, shape if count == 1 else pluralize(shape)]
    determiner = article(words[0]) if count == 1 else number_word(count)
    return " ".join([determiner] + words)


def join_list(items: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def object_groups(scene: Scene) -> list[list[int]]:
    """Indices of objects grouped by (colour, shape), in order of first appearance."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, obj in enumerate(scene.objects):
        groups.setdefault((obj.color, obj.shape), []).append(i)
    return list(groups.values())


def group_phrase(scene: Scene, group: list[int], mention_size: bool, mention_position: bool) -> str:
    """Noun phrase of one group; size only if shared by all, position only for a single object."""
    first = scene.objects[group[0]]
    sizes = {scene.objects[i].size for i in group}
    size = first.size if mention_size and len(sizes) == 1 else None
    phrase = noun_phrase(len(group), first.color, first.shape, size)
    if mention_position and len(group) == 1:
        phrase += " " + POSITION_PHRASES[first.position]
    return phrase


def relation_sentence(scene: Scene, rng: np.random.Generator, unique: list[int]) -> str:
    """One true relation between two uniquely described objects, in one of three templates."""
    i, j = (int(x) for x in rng.choice(unique, size=2, replace=False))
    a, b = scene.objects[i], scene.objects[j]
    candidates = [rel for s, rel, o in scene.relations if (s, o) == (i, j)]
    candidates += [INVERSE[rel] for s, rel, o in scene.relations if (s, o) == (j, i)]
    relation = RELATION_PHRASES[candidates[rng.integers(len(candidates))]]
    subject, obj = f"{a.color} {a.shape}", f"{b.color} {b.shape}"
    template = rng.integers(3)
    if template == 0:
        return f"The {subject} is {relation} the {obj}."
    if template == 1:
        return f"{relation.capitalize()} the {obj} there is {article(a.color)} {subject}."
    return f"We can also see the {subject} {relation} the {obj}."


def describe(scene: Scene, rng: np.random.Generator) -> str:
    """The caption of a scene (one or two sentences)."""
    mention_size = rng.random() < MENTION_SIZE_PROBABILITY
    mention_position = rng.random() < POSITION_PROBABILITY
    groups = object_groups(scene)
    phrases = [group_phrase(scene, g, mention_size, mention_position) for g in groups]
    opener = OPENERS[rng.integers(len(OPENERS))].format(be="is" if len(groups[0]) == 1 else "are")
    sentences = [f"{opener} {join_list(phrases)}."]
    unique = [g[0] for g in groups if len(g) == 1]
    if len(unique) >= 2 and rng.random() < RELATION_PROBABILITY:
        sentences.append(relation_sentence(scene, rng, unique))
    return " ".join(sentences)
