"""Captioning: image -> text (and image+audio -> text) through the text decoder, which
cross-attends the fused tokens. Fine-tuned with the teacher-forced decoder loss on the caption;
evaluated by beam search with the KV cache (`task.beam_width`, `task.length_penalty`), cut at
[SEP], scored by BLEU-4 and CIDEr.

Also holds the helpers speech recognition shares: caption loss, decoding and a picture sheet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from opt.data.contact_sheet import default_font, wrap_text
from opt.data.splits import batches
from opt.model.encoders import Modality, trim_to_content
from opt.model.objectives import decoder_loss
from opt.tasks import register
from opt.tasks.base import Task, TaskContext
from opt.tasks.generation_metrics import bleu4, blind_caption_scores, cider

TEXT, IMAGE, AUDIO = Modality.TEXT, Modality.IMAGE, Modality.AUDIO
EVAL_BATCH = 32
PICTURE_ITEMS = 8


def trimmed(model, batch: dict, device) -> dict:
    """Batch on `device`, text and mel cut to the longest content (padding is masked anyway)."""
    batch = {k: v.to(device) for k, v in batch.items()}
    return trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)


def fused_context(model, batch: dict, modalities: tuple):
    """Fuse only `modalities` of the batch -> Fused (tokens (B,S,D), valid (B,S))."""
    return model.fuse(model.encode(batch, modalities))


def caption_loss(model, batch: dict, modalities: tuple, pad_id: int) -> Tensor:
    """Teacher-forced CE of the text decoder on the caption tokens ([CLS] ... [SEP]), pads ignored."""
    fused = fused_context(model, batch, modalities)
    tokens = batch["tokens"]
    return decoder_loss(model.text_decoder, tokens, fused.tokens, fused.valid, tokens == pad_id)


def cut_at_sep(ids: Tensor, sep_id: int) -> list[list[int]]:
    """(B,T) generated ids -> per-row ids up to (not including) the first [SEP]."""
    rows = []
    for row in ids.tolist():
        rows.append(row[: row.index(sep_id)] if sep_id in row else row)
    return rows


@dataclass
class TextDecoding:
    """How the text decoder writes: beam width (1: greedy) and the length penalty alpha of the
    final ranking (log-probability / length**alpha)."""

    beam_width: int
    length_penalty: float

    @classmethod
    def from_config(cls, task_cfg) -> TextDecoding:
        return cls(int(task_cfg.beam_width), float(task_cfg.length_penalty))


@torch.no_grad()
def generate_captions(
    model, batch: dict, modalities: tuple, tokenizer, steps: int, decoding: TextDecoding
) -> list[str]:
    """Beam search (KV cache) from the fused `modalities` -> decoded captions (B strings)."""
    fused = fused_context(model, batch, modalities)
    ids = model.text_decoder.beam_search(
        fused.tokens, fused.valid, steps, decoding.beam_width, tokenizer.sep_id, decoding.length_penalty
    )
    return [tokenizer.decode(row) for row in cut_at_sep(ids, tokenizer.sep_id)]


def decode_split(model, split, modalities: tuple, context: TaskContext) -> tuple[list[str], list[str], list[int]]:
    """Generated captions, reference captions (the records') and item indices over a whole split."""
    tokenizer, records = context.tokenizer, split.records()
    steps = min(model.text_decoder.length, tokenizer.max_length)
    decoding = TextDecoding.from_config(context.cfg.task)
    generated, indices = [], []
    for batch in batches(split, EVAL_BATCH):
        batch = trimmed(model, batch, context.device)
        generated += generate_captions(model, batch, modalities, tokenizer, steps, decoding)
        indices += batch["index"].tolist()
    references = [records[i]["caption"] for i in indices]
    return generated, references, indices


def picture_sheet(images: list[np.ndarray], texts: list[str], out: Path, side: int = 160, lines: int = 6) -> Path:
    """Images (H,W,3) uint8 in a row-wrapped grid, each with its text underneath -> PNG at `out`."""
    font, cols = default_font(), min(4, max(1, len(images)))
    image_width = side * images[0].shape[1] // images[0].shape[0] if images else side  # keep the aspect
    rows, width, height = -(-len(images) // cols), image_width + 16, side + 16 + lines * 16
    sheet = Image.new("RGB", (cols * width, max(1, rows) * height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, text) in enumerate(zip(images, texts)):
        x, y = (i % cols) * width + 8, (i // cols) * height + 8
        sheet.paste(Image.fromarray(image).resize((image_width, side), Image.NEAREST), (x, y))
        for k, line in enumerate(wrap_text(text, font, image_width, lines)):
            draw.text((x, y + side + 4 + 16 * k), line, fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def to_uint8(image: Tensor) -> np.ndarray:
    """(3,H,W) in [0,1] -> (H,W,3) uint8."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@register
class Captioning(Task):
    name = "captioning"
    settings = {"": (IMAGE,), "_image_audio": (IMAGE, AUDIO)}  # metric suffix -> fused modalities

    def heads(self, model, context: TaskContext) -> nn.Module:
        return nn.ModuleDict()  # the pre-trained text decoder is the head

    def losses(self, model, heads, batch: dict, draw, context: TaskContext) -> dict:
        batch = trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
        out = {
            f"captioning{suffix}_loss": caption_loss(model, batch, mods, context.tokenizer.pad_id)
            for suffix, mods in self.settings.items()
        }
        out["loss"] = sum(out.values()) / len(out)
        return out

    @torch.no_grad()
    def evaluate(self, model, heads, split: str, context: TaskContext) -> dict:
        data, metrics = context.split(split), {}
        for suffix, modalities in self.settings.items():
            generated, references, indices = decode_split(model, data, modalities, context)
            metrics[f"bleu4{suffix}"] = bleu4(generated, references)
            metrics[f"cider{suffix}"] = cider(generated, references)
            if not suffix:
                self.save_picture(data, generated, indices, context.pictures_dir / f"captioning_{split}.png")
        return metrics

    def blind(self, split: str, context: TaskContext) -> dict:
        """The best single train caption given for every image (with or without the audio)."""
        train = [r["caption"] for r in context.split("train").records()]
        scores = blind_caption_scores(train, [r["caption"] for r in context.split(split).records()])
        return {f"{metric}{suffix}": value for suffix in self.settings for metric, value in scores.items()}

    def save_picture(self, data, generated: list[str], indices: list[int], out: Path) -> Path:
        shown = list(range(min(PICTURE_ITEMS, len(indices))))
        images = [to_uint8(data[indices[i]]["image"]) for i in shown]
        return picture_sheet(images, [generated[i] or "(empty)" for i in shown], out)
