"""Speech recognition: audio -> text through the text decoder cross-attending the fused audio
tokens. Fine-tuned with the decoder loss on the caption (the narration's transcript); scored by
WER (jiwer) of greedy transcripts against the reference captions, both lower-cased and normalised.
"""

from __future__ import annotations

import torch
from torch import nn

from opt.model.encoders import Modality, trim_to_content
from opt.tasks import register
from opt.tasks.base import Task, TaskContext
from opt.tasks.captioning import caption_loss, decode_split
from opt.tasks.generation_metrics import best_constant, candidate_pool, normalise, wer

AUDIO = Modality.AUDIO
EXAMPLES = 3  # transcripts kept in the metrics file would not be numbers: printed instead


@register
class SpeechRecognition(Task):
    name = "speech_recognition"
    modalities = (AUDIO,)

    def heads(self, model, context: TaskContext) -> nn.Module:
        return nn.ModuleDict()  # the pre-trained text decoder is the head

    def losses(self, model, heads, batch: dict, draw, context: TaskContext) -> dict:
        batch = trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
        loss = caption_loss(model, batch, self.modalities, context.tokenizer.pad_id)
        return {"speech_recognition_loss": loss, "loss": loss}

    @torch.no_grad()
    def evaluate(self, model, heads, split: str, context: TaskContext) -> dict:
        hypotheses, references, _ = decode_split(model, context.split(split), self.modalities, context)
        exact = sum(normalise(h) == normalise(r) for h, r in zip(hypotheses, references)) / len(references)
        for h, r in list(zip(hypotheses, references))[:EXAMPLES]:
            print(f"speech_recognition {split}: ref {normalise(r)!r}\n{'':>20} hyp {normalise(h)!r}")
        return {"wer": wer(hypotheses, references), "sentence_accuracy": float(exact)}

    def blind(self, split: str, context: TaskContext) -> dict:
        """The single train transcript (of a pool, see candidate_pool) with the lowest WER as every answer."""
        references = [r["caption"] for r in context.split(split).records()]
        pool = candidate_pool([r["caption"] for r in context.split("train").records()])
        best, value = best_constant(pool, references, wer, lower_is_better=True)
        return {"wer": value, "sentence_accuracy": sum(normalise(r) == best for r in references) / len(references)}
