"""Pillow drawing of scenes: deterministic, anti-aliased by drawing at 4x and downsampling.

Optional photo stamps: when `data.use_stamps` is on and Debian's `tuxpaint-stamps-default`
is installed, a few clip-art nouns ("dog", "apple", ...) join the shapes; a stamp is drawn
tinted in its object's colour so "a blue dog" is true of the image.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from opt.data.scenes import COLORS, Scene, SceneObject

SUPERSAMPLE = 4
# Stamps whose file name is a plain noun that reads well in a caption (and is no colour or shape).
STAMP_NOUNS = ("dog", "duck", "apple", "butterfly", "elephant", "tree", "key", "teapot")


def stamp_catalogue(data_cfg) -> dict[str, Path]:
    """Stamp noun -> PNG path, for the nouns found under `data.stamps_dir` (empty when off)."""
    root = Path(data_cfg.stamps_dir)
    if not data_cfg.use_stamps or not root.is_dir():
        return {}
    found = {}
    for path in sorted(root.rglob("*.png")):
        if path.stem in STAMP_NOUNS and path.stem not in found:
            found[path.stem] = path
    return {noun: found[noun] for noun in STAMP_NOUNS if noun in found}


def _polygon(kind: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape inscribed in `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if kind == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if kind == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if kind == "hexagon":
        return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in (k * math.pi / 3 for k in range(6))]
    if kind == "star":
        points = []
        for k in range(10):
            r, a = (1.0 if k % 2 == 0 else 0.42), -math.pi / 2 + k * math.pi / 5
            points.append((cx + rx * r * math.cos(a), cy + ry * r * math.sin(a) * 1.05 + ry * 0.05))
        return points
    if kind == "heart":  # the classic parametric heart, scaled into the box
        ts = [2 * math.pi * k / 48 for k in range(48)]
        xs = [16 * math.sin(t) ** 3 for t in ts]
        ys = [-(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)) for t in ts]
        return [(cx + rx * x / 16.5, cy + ry * (y + 2.5) / 14.5) for x, y in zip(xs, ys)]
    raise ValueError(f"no polygon for shape {kind!r}")


def draw_shape(draw: ImageDraw.ImageDraw, obj: SceneObject, scale: int) -> None:
    """Fill one object's shape in its bbox (coordinates multiplied by `scale`)."""
    x0, y0, x1, y1 = (v * scale for v in obj.bbox)
    box = (x0, y0, x1 - 1, y1 - 1)
    color = COLORS[obj.color]
    if obj.shape == "circle":
        draw.ellipse(box, fill=color)
    elif obj.shape == "square":
        draw.rectangle(box, fill=color)
    elif obj.shape == "cross":
        w, h = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle((x0 + w, y0, x1 - w - 1, y1 - 1), fill=color)
        draw.rectangle((x0, y0 + h, x1 - 1, y1 - h - 1), fill=color)
    else:
        draw.polygon(_polygon(obj.shape, box), fill=color)


@lru_cache(maxsize=64)
def _stamp_luminance(path: str, side: int) -> Image.Image:
    """A stamp as 'LA' (luminance, alpha), fitted into a side x side square."""
    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    rgba.thumbnail((side, side), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas.convert("LA")


def paste_stamp(image: Image.Image, obj: SceneObject, path: Path) -> None:
    """Paste a stamp tinted in the object's colour (its shades map to shades of that colour)."""
    x0, y0, x1, y1 = obj.bbox
    luminance, alpha = _stamp_luminance(str(path), x1 - x0).split()
    color = COLORS[obj.color]
    dark = tuple(int(c * 0.6) for c in color)
    light = tuple(int(c + (255 - c) * 0.3) for c in color)
    tinted = ImageOps.colorize(luminance, black=dark, white=light)
    image.paste(tinted, (x0, y0), alpha)


def render_scene(scene: Scene, image_size: int, stamps: dict[str, Path] | None = None) -> Image.Image:
    """The scene as an RGB image (image_size x image_size)."""
    stamps = stamps or {}
    big = Image.new("RGB", (image_size * SUPERSAMPLE,) * 2, scene.background)
    draw = ImageDraw.Draw(big)
    for obj in scene.objects:
        if obj.shape not in stamps:
            draw_shape(draw, obj, SUPERSAMPLE)
    image = big.resize((image_size, image_size), Image.Resampling.BOX)
    for obj in scene.objects:
        if obj.shape in stamps:
            paste_stamp(image, obj, stamps[obj.shape])
    return image
