"""Text-to-image: the image decoder generates the VQ codes of an image from the fused text tokens,
and the VQ decoder renders them. Fine-tuned with the decoder loss on the real image's codes, with
`task.null_text_prob` of the prompts hidden (only the fused CLS left), so that generation can use
classifier-free guidance: codes are sampled (temperature, top-k) from null + s * (text - null).
Greedy decoding collapses to the most common code, the background, whatever the prompt.

Scored by a probe trained separately on real train images (opt.probe): attribute accuracy
(multi-label set accuracy of the probe's verdict on the generated image against the prompt's
scene), exact match, and a Fréchet distance between probe features of generated and real images.
Two ceilings on the same prompts: the probe on the real images (`probe_accuracy`) and on the VQ
tokenizer's reconstructions of them (`reconstruction_accuracy`: the most any code generator can
reach). The blind baseline gives each prompt the real image of another prompt (attribute accuracy
at chance) and, for the Fréchet distance, compares real images of two splits: the noise floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from opt.artifacts import load_vq
from opt.data.manifest import label_matrix
from opt.data.splits import batches
from opt.model.decoders import Generators
from opt.model.encoders import Modality, trim_to_content
from opt.model.objectives import decoder_loss
from opt.probe import judge, load_images, load_or_train_probe
from opt.tasks import register
from opt.tasks.base import Task, TaskContext
from opt.tasks.captioning import PICTURE_ITEMS, picture_sheet, to_uint8
from opt.tasks.generation_metrics import accuracy_by_field, exact_match, frechet_distance, label_set_accuracy

TEXT = Modality.TEXT
EVAL_BATCH = 32


@dataclass
class ImageSampling:
    """How codes are drawn: classifier-free guidance scale, temperature (0: greedy), top-k (0: all)."""

    guidance: float
    temperature: float
    top_k: int

    @classmethod
    def from_config(cls, task_cfg) -> ImageSampling:
        return cls(task_cfg.image_guidance, task_cfg.image_temperature, task_cfg.image_top_k)


def encode_text(model, batch: dict, trim: bool = True) -> dict:
    """Prompts -> {TEXT: Encoded}; the padding all prompts share is trimmed unless `trim` is False
    (then no prompt's numbers depend on the lengths of the others in its batch)."""
    if trim:
        batch = trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
    return model.encode(batch, (TEXT,))


def text_context(model, encoded: dict, shown: Tensor | None = None):
    """Encoded text -> Fused (tokens (B,S,D), valid (B,S)); rows where `shown` (B,) is False keep
    only the fused CLS (the null prompt)."""
    return model.fuse(encoded, None if shown is None else {TEXT: shown})


@torch.no_grad()
def images_from_text(
    model, vq, batch: dict, sampling: ImageSampling, generator: Generators = None, trim: bool = True
) -> Tensor:
    """Prompts (tokens (B,L), token_count (B,)) -> sampled codes (KV cache) -> images (B,3,H,W) in [0,1].
    `generator`: one for the batch, or one per prompt; `trim`: see encode_text."""
    encoded = encode_text(model, batch, trim)  # once, for both halves of guidance
    fused = text_context(model, encoded)
    hidden = torch.zeros(fused.tokens.shape[0], dtype=torch.bool, device=fused.tokens.device)
    null = text_context(model, encoded, hidden)
    codes = model.image_decoder.generate(
        fused.tokens,
        fused.valid,
        use_cache=True,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        generator=generator,
        null_context=(null.tokens, null.valid),
        guidance=sampling.guidance,
    )  # (B,G)
    return vq.decode_codes(codes)


@torch.no_grad()
def generate_images(
    model, vq, data, device, sampling: ImageSampling, seed: int = 0
) -> tuple[Tensor, Tensor, list[int]]:
    """Codes for every prompt of a split, drawn from `seed` -> generated (N,3,H,W), real (N,3,H,W), indices."""
    generator = torch.Generator(device=device).manual_seed(seed)
    generated, real, indices = [], [], []
    for batch in batches(data, EVAL_BATCH):
        batch = {k: v.to(device) for k, v in batch.items()}
        generated.append(images_from_text(model, vq.to(device), batch, sampling, generator).cpu())
        real.append(batch["image"].cpu())
        indices += batch["index"].tolist()
    return torch.cat(generated), torch.cat(real), indices


def floor_split(split: str) -> str:
    """The split whose real images set the Fréchet-distance noise floor of `split`."""
    return "test" if split == "val" else "val"


def fielded(metric: str, predicted, truth, labels: list[str]) -> dict:
    """{"<metric>/<field>": accuracy over that field's labels} (colour, shape, size)."""
    return {f"{metric}/{field}": v for field, v in accuracy_by_field(predicted, truth, labels).items()}


@register
class TextToImage(Task):
    name = "text_to_image"

    def __init__(self):
        self._vq, self._probe = None, None  # loaded or trained on first evaluation

    def heads(self, model, context: TaskContext) -> nn.Module:
        return nn.ModuleDict()  # the pre-trained image decoder is the head

    def losses(self, model, heads, batch: dict, draw, context: TaskContext) -> dict:
        shown, p = None, context.cfg.task.null_text_prob
        if draw is not None and p > 0:
            shown = draw.rand(batch["tokens"].shape[:1], batch["tokens"].device) >= p  # (B,)
        fused = text_context(model, encode_text(model, batch), shown)
        loss = decoder_loss(model.image_decoder, batch["codes"], fused.tokens, fused.valid)
        return {"text_to_image_loss": loss, "loss": loss}

    def tools(self, context: TaskContext):
        """(VQ tokenizer, probe, probe labels), loaded once per task instance."""
        if self._vq is None:
            self._vq = load_vq(context.cfg)
            self._probe = load_or_train_probe(context.cfg, context.split("train"))
        return self._vq, *self._probe

    @torch.no_grad()
    def evaluate(self, model, heads, split: str, context: TaskContext) -> dict:
        vq, probe, labels = self.tools(context)
        data = context.split(split)
        sampling = ImageSampling.from_config(context.cfg.task)
        generated, real, indices = generate_images(model, vq, data, context.device, sampling)
        records = data.records()
        truth = label_matrix([records[i] for i in indices], labels)
        k = len(labels)
        gen_pred, gen_feat = judge(probe, generated)
        real_pred, real_feat = judge(probe, real)
        rebuilt_pred, _ = judge(probe, vq.decode_codes(vq.encode_codes(real.to(context.device))).cpu())
        self.save_picture(
            generated,
            real,
            [records[i]["caption"] for i in indices],
            context.pictures_dir / f"text_to_image_{split}.png",
        )
        metrics = {"frechet_distance": frechet_distance(gen_feat, real_feat)}
        if k:
            metrics.update(
                {
                    "attribute_accuracy": label_set_accuracy(gen_pred[:, :k], truth),
                    "exact_match": exact_match(gen_pred[:, :k], truth),
                    "probe_accuracy": label_set_accuracy(real_pred[:, :k], truth),
                    "reconstruction_accuracy": label_set_accuracy(rebuilt_pred[:, :k], truth),
                    "probe_exact_match": exact_match(real_pred[:, :k], truth),
                    **fielded("attribute_accuracy", gen_pred[:, :k], truth, labels),
                    **fielded("reconstruction_accuracy", rebuilt_pred[:, :k], truth, labels),
                }
            )
        return metrics

    def blind(self, split: str, context: TaskContext) -> dict:
        """Each prompt given the real image of the next prompt (attribute accuracy, exact match at
        chance); the Fréchet distance between real images of this split and of `floor_split`, cut
        to the same size: what a prompt-blind generator of perfect images scores (the noise floor)."""
        _, probe, labels = self.tools(context)
        data, other = context.split(split), context.split(floor_split(split))
        size = min(len(data), len(other))
        predicted, features = judge(probe, load_images(data).float() / 255)
        _, other_features = judge(probe, load_images(other)[:size].float() / 255)
        out = {"frechet_distance": frechet_distance(features[:size], other_features)}
        if labels:
            truth, shown = label_matrix(data.records(), labels), np.roll(predicted, 1, axis=0)[:, : len(labels)]
            out.update(
                {
                    "attribute_accuracy": label_set_accuracy(shown, truth),
                    "exact_match": exact_match(shown, truth),
                    **fielded("attribute_accuracy", shown, truth, labels),
                }
            )
        return out

    def save_picture(self, generated: Tensor, real: Tensor, prompts: list[str], out) -> None:
        """Generated and real image side by side, the prompt underneath."""
        shown = range(min(PICTURE_ITEMS, len(prompts)))
        pairs = [np.concatenate([to_uint8(generated[i]), to_uint8(real[i])], axis=1) for i in shown]
        picture_sheet(pairs, [f"{prompts[i]} (generated | real)" for i in shown], out, side=128)
