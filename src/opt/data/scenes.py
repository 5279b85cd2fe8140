"""Scenes of the built-in data: 1-3 coloured objects on a 3x3 grid, their relations and splits.

Splits are planned before any scene is drawn, so each scene is a pure function of (seed,
index) and the plan, whose first i entries do not depend on `n`:
- `heldout` colour-shape pairs (chosen from the seed) occur only in `test_compositional` scenes,
  and every such scene holds at least one of them;
- the k-th train scene is anchored on the k-th pair of a seeded order of all other pairs, and
  val/test (and the non-held-out objects of compositional scenes) draw only from the anchors of
  train scenes that came before them, so every pair they show also occurs in train.
Split membership follows a seeded golden-ratio (Weyl) sequence, so the fractions hold closely
and even 20 scenes hit every split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart")
COLORS = {
    "red": (214, 40, 40),
    "orange": (245, 130, 20),
    "yellow": (235, 200, 20),
    "green": (40, 150, 60),
    "blue": (40, 90, 215),
    "purple": (130, 55, 180),
    "pink": (240, 110, 175),
    "brown": (125, 75, 35),
}
SIZES = ("small", "large")
SIZE_FRACTION = {"small": 0.55, "large": 0.9}  # side of the object's box / side of a grid cell
RELATIONS = ("left of", "right of", "above", "below")
GRID = 3
DUPLICATE_PROBABILITY = 0.2  # an extra object repeats a colour-shape pair already in the scene
GOLDEN = 0.6180339887498949
SPLIT_STREAM, PAIR_STREAM = 1, 2  # spawn keys: streams apart from the per-scene [seed, i]

Pair = tuple[str, str]  # (colour, shape)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    position: tuple[int, int]  # (row, col) on the grid, row 0 at the top
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1) pixels, x1/y1 exclusive

    def to_record(self) -> dict:
        return {
            "shape": self.shape,
            "color": self.color,
            "size": self.size,
            "position": list(self.position),
            "bbox": list(self.bbox),
        }


@dataclass
class Scene:
    objects: list[SceneObject]  # in reading order (row, then column)
    relations: list[tuple[int, str, int]]  # (subject, relation, object), subject < object
    split: str
    background: tuple[int, int, int]


@dataclass(frozen=True)
class PairPlan:
    """Which colour-shape pairs each split may use."""

    heldout: tuple[Pair, ...]
    train_order: tuple[Pair, ...]  # every other pair, in the order train scenes are anchored on

    def covered(self, n_train_before: int) -> tuple[Pair, ...]:
        """Pairs anchored by the first `n_train_before` train scenes (at least one)."""
        return self.train_order[: max(1, min(n_train_before, len(self.train_order)))]


@dataclass(frozen=True)
class ScenePlan:
    index: int
    split: str
    n_train_before: int  # train scenes with a smaller index


@dataclass(frozen=True)
class DatasetPlan:
    pairs: PairPlan
    scenes: list[ScenePlan] = field(default_factory=list)


def _stream(seed: int, key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


def plan_pairs(seed: int, n_heldout: int, shapes=SHAPES, colors=tuple(COLORS)) -> PairPlan:
    """Hold out `n_heldout` pairs with distinct colours and distinct base shapes; order the rest."""
    base = [s for s in shapes if s in SHAPES] or list(shapes)
    if n_heldout > min(len(colors), len(base)):
        raise ValueError(f"heldout_pairs={n_heldout} exceeds min(#colours, #shapes)={min(len(colors), len(base))}")
    rng = _stream(seed, PAIR_STREAM)
    color_order = [colors[i] for i in rng.permutation(len(colors))]
    shape_order = [base[i] for i in rng.permutation(len(base))]
    heldout = tuple(zip(color_order[:n_heldout], shape_order[:n_heldout]))
    rest = [(c, s) for c in colors for s in shapes if (c, s) not in heldout]
    return PairPlan(heldout, tuple(rest[i] for i in rng.permutation(len(rest))))


def plan_splits(seed: int, n: int, val: float, test: float, compositional: float) -> list[ScenePlan]:
    """Split of every scene from a seeded golden-ratio sequence; no held-out scene before a train one."""
    offset = float(_stream(seed, SPLIT_STREAM).random())
    bounds = (("val", val), ("test", test), ("test_compositional", compositional))
    plans, n_train = [], 0
    for i in range(n):
        u, split, edge = (offset + i * GOLDEN) % 1.0, "train", 0.0
        for name, fraction in bounds:
            if edge <= u < edge + fraction:
                split = name
            edge += fraction
        if n_train == 0:
            split = "train"  # val/test/compositional need a train scene to draw pairs from
        plans.append(ScenePlan(i, split, n_train))
        n_train += split == "train"
    return plans


def plan_dataset(data_cfg, shapes=SHAPES) -> DatasetPlan:
    """The whole dataset's plan from `cfg.data` (seed, n, fractions, heldout_pairs)."""
    pairs = plan_pairs(int(data_cfg.seed), int(data_cfg.heldout_pairs), tuple(shapes))
    compositional = float(data_cfg.compositional_fraction) if pairs.heldout else 0.0
    scenes = plan_splits(
        int(data_cfg.seed), int(data_cfg.n), float(data_cfg.val_fraction), float(data_cfg.test_fraction), compositional
    )
    return DatasetPlan(pairs, scenes)


def scene_pairs(rng: np.random.Generator, plan: ScenePlan, pairs: PairPlan, k: int) -> list[Pair]:
    """Colour-shape pairs of a scene's `k` objects, obeying its split's rules."""
    covered = pairs.covered(plan.n_train_before)
    if plan.split == "train":
        pool = pairs.train_order
        first = pairs.train_order[plan.n_train_before % len(pairs.train_order)]
    else:
        pool = covered
        first = (
            pairs.heldout[rng.integers(len(pairs.heldout))]
            if plan.split == "test_compositional"
            else covered[rng.integers(len(covered))]
        )
    chosen = [first]
    while len(chosen) < k:
        repeat = rng.random() < DUPLICATE_PROBABILITY
        chosen.append(chosen[rng.integers(len(chosen))] if repeat else pool[rng.integers(len(pool))])
    return chosen


def cell_edges(image_size: int) -> list[int]:
    """Pixel edges of the grid's rows and columns: [0, 21, 43, 64] for 64 pixels."""
    return [round(k * image_size / GRID) for k in range(GRID + 1)]


def object_bbox(rng: np.random.Generator, cell: tuple[int, int], size: str, image_size: int) -> tuple:
    """A square box of the size's side, placed at random inside its grid cell."""
    edges = cell_edges(image_size)
    cell_side = min(b - a for a, b in zip(edges, edges[1:]))
    side = max(3, round(SIZE_FRACTION[size] * cell_side))
    (row, col) = cell
    x0 = edges[col] + int(rng.integers(0, edges[col + 1] - edges[col] - side + 1))
    y0 = edges[row] + int(rng.integers(0, edges[row + 1] - edges[row] - side + 1))
    return (x0, y0, x0 + side, y0 + side)


def relations_of(objects: list[SceneObject]) -> list[tuple[int, str, int]]:
    """Every true relation between each pair i < j, from their grid cells."""
    relations = []
    for i, a in enumerate(objects):
        for j in range(i + 1, len(objects)):
            b = objects[j]
            if a.position[1] != b.position[1]:
                relations.append((i, "left of" if a.position[1] < b.position[1] else "right of", j))
            if a.position[0] != b.position[0]:
                relations.append((i, "above" if a.position[0] < b.position[0] else "below", j))
    return relations


def sample_scene(
    rng: np.random.Generator, plan: ScenePlan, pairs: PairPlan, image_size: int, max_objects: int = 3
) -> Scene:
    """Draw one scene: objects (in reading order), their relations and a light background."""
    k = int(rng.integers(1, min(max_objects, GRID * GRID) + 1))
    cells = sorted(divmod(int(c), GRID) for c in rng.choice(GRID * GRID, size=k, replace=False))
    chosen = scene_pairs(rng, plan, pairs, k)
    order = rng.permutation(k)  # the anchor object lands in any cell
    objects = []
    for cell, pair_ix in zip(cells, order):
        color, shape = chosen[pair_ix]
        size = SIZES[rng.integers(len(SIZES))]
        objects.append(SceneObject(shape, color, size, cell, object_bbox(rng, cell, size, image_size)))
    background = tuple(int(v) for v in rng.integers(226, 250, size=3))
    return Scene(objects, relations_of(objects), plan.split, background)
