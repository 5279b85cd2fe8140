"""Text-to-image: the image decoder generates the VQ codes of an image from the fused text tokens,
and the VQ decoder renders them. Fine-tuned with the decoder loss on the real image's codes.

Scored by a probe trained separately on real train images (opt.tasks.probe): attribute accuracy
(multi-label set accuracy of the probe's verdict on the generated image against the prompt's
scene), exact match, the probe's own accuracy on the real images of the split, and a Fréchet
distance between probe features of generated and real images.
"""
from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from opt.model.encoders import Modality, trim_to_content
from opt.model.objectives import decoder_loss
from opt.tasks import register
from opt.tasks.base import Task, TaskContext
from opt.tasks.captioning import PICTURE_ITEMS, picture_sheet, to_uint8
from opt.tasks.generation_metrics import exact_match, frechet_distance, label_set_accuracy
from opt.tasks.probe import judge, label_matrix, load_or_train_probe
from opt.train.data import batches, image_tokenizer_dir
from opt.train.image_tokenizer import build_vq

TEXT = Modality.TEXT
EVAL_BATCH = 32


def text_context(model, batch: dict):
    """Fused text tokens -> Fused (tokens (B,S,D), valid (B,S))."""
    batch = trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
    return model.fuse(model.encode(batch, (TEXT,)))


def load_vq(cfg):
    """The trained VQ image tokenizer (models/image_tokenizer/vq.safetensors), in eval mode."""
    vq = build_vq(cfg)
    vq.load_state_dict(load_file(image_tokenizer_dir(cfg) / "vq.safetensors"))
    return vq.eval()


@torch.no_grad()
def images_from_text(model, vq, batch: dict) -> Tensor:
    """Prompts (tokens (B,L), token_count (B,)) -> greedy codes (KV cache) -> images (B,3,H,W) in [0,1]."""
    fused = text_context(model, batch)
    codes = model.image_decoder.generate(fused.tokens, fused.valid, use_cache=True)  # (B,G)
    return vq.decode_codes(codes)


@torch.no_grad()
def generate_images(model, vq, data, device) -> tuple[Tensor, Tensor, list[int]]:
    """Greedy codes (KV cache) for every prompt of a split -> generated (N,3,H,W), real (N,3,H,W), indices."""
    generated, real, indices = [], [], []
    for batch in batches(data, EVAL_BATCH):
        batch = {k: v.to(device) for k, v in batch.items()}
        generated.append(images_from_text(model, vq.to(device), batch).cpu())
        real.append(batch["image"].cpu())
        indices += batch["index"].tolist()
    return torch.cat(generated), torch.cat(real), indices


@register
class TextToImage(Task):
    name = "text_to_image"

    def __init__(self):
        self._vq, self._probe = None, None  # loaded or trained on first evaluation

    def heads(self, model, context: TaskContext) -> nn.Module:
        return nn.ModuleDict()  # the pre-trained image decoder is the head

    def losses(self, model, heads, batch: dict, draw, context: TaskContext) -> dict:
        fused = text_context(model, batch)
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
        generated, real, indices = generate_images(model, vq, data, context.device)
        records = data.records()
        truth = label_matrix([records[i] for i in indices], labels)
        k = len(labels)
        gen_pred, gen_feat = judge(probe, generated)
        real_pred, real_feat = judge(probe, real)
        self.save_picture(generated, real, [records[i]["caption"] for i in indices],
                          context.pictures_dir / f"text_to_image_{split}.png")
        metrics = {"frechet_distance": frechet_distance(gen_feat, real_feat)}
        if k:
            metrics.update({
                "attribute_accuracy": label_set_accuracy(gen_pred[:, :k], truth),
                "exact_match": exact_match(gen_pred[:, :k], truth),
                "probe_accuracy": label_set_accuracy(real_pred[:, :k], truth),
                "probe_exact_match": exact_match(real_pred[:, :k], truth),
            })
        return metrics

    def save_picture(self, generated: Tensor, real: Tensor, prompts: list[str], out) -> None:
        """Generated and real image side by side, the prompt underneath."""
        shown = range(min(PICTURE_ITEMS, len(prompts)))
        pairs = [np.concatenate([to_uint8(generated[i]), to_uint8(real[i])], axis=1) for i in shown]
        picture_sheet(pairs, [f"{prompts[i]} (generated | real)" for i in shown], out, side=128)
