"""A contact sheet: a grid of prepared images with their split and caption underneath.

It shows what the model is fed (the resized images, the captions) so a person can look at the data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL_WIDTH = 224  # pixels per grid cell, image and text
IMAGE_SIDE = 192  # each image is scaled to this side
MARGIN = 16
FONT_SIZE = 13
LINE_HEIGHT = 16
CAPTION_LINES = 7  # header line (split, id) + caption lines; longer captions end in "..."
CELL_HEIGHT = MARGIN + IMAGE_SIDE + MARGIN // 2 + CAPTION_LINES * LINE_HEIGHT + MARGIN // 2


def grid_shape(n_items: int) -> tuple[int, int]:
    """(columns, rows) of a near-square grid holding n_items."""
    cols = max(1, math.ceil(math.sqrt(n_items)))
    return cols, max(1, math.ceil(n_items / cols))


def sheet_size(n_items: int) -> tuple[int, int]:
    """(width, height) in pixels of the sheet for n_items."""
    cols, rows = grid_shape(n_items)
    return cols * CELL_WIDTH, rows * CELL_HEIGHT


def default_font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    """Pillow's bundled default font, scalable when FreeType is present."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def wrap_text(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; the last kept line ends in '...' when cut."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if font.getlength(candidate) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and font.getlength(lines[-1] + "...") > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "..."
    return lines


def to_pil(image_chw: np.ndarray) -> Image.Image:
    """uint8 (3, H, W) -> RGB image scaled to IMAGE_SIDE (nearest, so pixels stay crisp)."""
    image = Image.fromarray(np.ascontiguousarray(np.asarray(image_chw).transpose(1, 2, 0)), mode="RGB")
    return image.resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.NEAREST)


def draw_cell(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    font,
    origin: tuple[int, int],
    image_chw: np.ndarray,
    header: str,
    caption: str,
) -> None:
    x, y = origin
    image_x = x + (CELL_WIDTH - IMAGE_SIDE) // 2
    sheet.paste(to_pil(image_chw), (image_x, y + MARGIN))
    draw.rectangle(
        [image_x - 1, y + MARGIN - 1, image_x + IMAGE_SIDE, y + MARGIN + IMAGE_SIDE], outline=(160, 160, 160)
    )
    text_y = y + MARGIN + IMAGE_SIDE + MARGIN // 2
    text_width = CELL_WIDTH - MARGIN
    draw.text((x + MARGIN // 2, text_y), wrap_text(header, font, text_width, 1)[0], fill=(90, 90, 90), font=font)
    for i, line in enumerate(wrap_text(caption, font, text_width, CAPTION_LINES - 1)):
        draw.text((x + MARGIN // 2, text_y + (i + 1) * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)


def write_contact_sheet(
    path: Path, images: list[np.ndarray], headers: list[str], captions: list[str]
) -> tuple[int, int]:
    """Draw images (uint8 (3, H, W) each) with a header and caption under each; returns the size."""
    size = sheet_size(len(images))
    sheet = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(sheet)
    font = default_font()
    cols, _ = grid_shape(len(images))
    for i, (image, header, caption) in enumerate(zip(images, headers, captions)):
        draw_cell(sheet, draw, font, ((i % cols) * CELL_WIDTH, (i // cols) * CELL_HEIGHT), image, header, caption)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return size
