"""VQA on questions derived from scene ground truth (see opt.data.questions).

The question, encoded with the caption tokenizer, is the text modality; it is fused with the
image by the cross-modal encoder, and a classifier on the fused CLS beside the image's summary
(`OPT.summary`, what contrastive pre-training trains) picks the answer from the answer vocabulary
of the train questions. The summary is read directly because the fused CLS alone lost colours
when the image summary became the max over patches (README: Image summary). Each item's image
is encoded once and shared by all its questions. Accuracy overall and per question type
("accuracy/colour", ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opt.data.questions import answer_vocab, item_questions, prior_answers, scene_vocab, split_questions
from opt.data.splits import batches
from opt.model.encoders import Encoded, Modality
from opt.tasks import register
from opt.tasks.base import Task, text_batch
from opt.tasks.metrics import accuracy_by_type


def repeat(encoded: Encoded, owner: Tensor) -> Encoded:
    """Rows of `encoded` picked by owner (Q,) -> Encoded with Q rows."""
    return Encoded(encoded.tokens[owner], encoded.valid[owner])


@register
class VQA(Task):
    name = "vqa"

    def __init__(self):
        self.scene: dict = {}  # scene vocabulary the questions are drawn from (task state)
        self.answers: list[str] = []  # the answer head's classes, in order (task state)

    def fit_state(self, context) -> dict:
        """Scene and answer vocabularies of the train records."""
        train = context.split("train").records()
        scene = scene_vocab(train)
        return {"scene": scene, "answers": answer_vocab(train, scene)}

    def use_state(self, state: dict) -> None:
        self.scene, self.answers = state["scene"], list(state["answers"])

    def heads(self, model, context) -> nn.Module:
        return nn.ModuleDict({"answer": nn.Linear(2 * model.cfg.dim, len(self.answers))})  # [fused CLS; summary]

    def questions(self, context, split: str, indices) -> tuple[list, list]:
        """Item indices -> (questions, owner position in the batch of each question)."""
        records = self.records(context, split)
        qs, owner = [], []
        for pos, i in enumerate(indices):
            for q in item_questions(records[int(i)], int(i), self.scene):
                qs.append(q)
                owner.append(pos)
        return qs, owner

    def answer_logits(self, model, heads, batch: dict, qs: list, owner: list, context) -> Tensor:
        """(Q, n_answers) logits of each question about its item's image."""
        device = context.device
        image = model.encode({"image": batch["image"].to(device)}, (Modality.IMAGE,))[Modality.IMAGE]
        text = model.encode(text_batch(context.tokenizer, [q.text for q in qs], device), (Modality.TEXT,))
        owner = torch.tensor(owner, device=device)
        fused = model.fuse({Modality.TEXT: text[Modality.TEXT], Modality.IMAGE: repeat(image, owner)})
        summary = model.summary(image, Modality.IMAGE)[owner]  # (Q,D)
        return heads["answer"](torch.cat([fused.tokens[:, 0], summary], dim=-1)).float()

    def losses(self, model, heads, batch, draw, context) -> dict:
        qs, owner = self.questions(context, "train", batch["index"].tolist())
        if not qs:
            zero = sum(p.sum() for p in heads.parameters()) * 0.0
            return {"loss": zero, "vqa_loss": zero}
        logits = self.answer_logits(model, heads, batch, qs, owner, context)
        index = {a: k for k, a in enumerate(self.answers)}
        target = torch.tensor([index.get(q.answer, -100) for q in qs], device=logits.device)
        loss = F.cross_entropy(logits, target, ignore_index=-100)
        return {"loss": loss, "vqa_loss": loss}

    @torch.no_grad()
    def evaluate(self, model, heads, split, context) -> dict:
        model.eval()
        heads.eval()
        predicted, gold, kinds = [], [], []
        for batch in batches(context.split(split), 64):
            qs, owner = self.questions(context, split, batch["index"].tolist())
            if not qs:
                continue
            logits = self.answer_logits(model, heads, batch, qs, owner, context)
            predicted += [self.answers[k] for k in logits.argmax(-1).tolist()]
            gold += [q.answer for q in qs]
            kinds += [q.kind for q in qs]
        return accuracy_by_type(predicted, gold, kinds)

    def blind(self, split, context) -> dict:
        """Each question answered with the most common train answer to its text (a language prior)."""
        train = split_questions(self.records(context, "train"), self.scene)
        questions = split_questions(self.records(context, split), self.scene)
        predicted = prior_answers(train, questions)
        return accuracy_by_type(predicted, [q.answer for q in questions], [q.kind for q in questions])
