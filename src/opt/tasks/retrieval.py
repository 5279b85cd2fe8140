"""Retrieval in every direction between text, image and audio, and text+audio -> image.

The text+audio query goes through the cross-modal encoder: text and audio are fused, and the
fused CLS, through this task's `query` head, is added as a residual to the text embedding before
normalising (never an average of the two single-modal embeddings). The head starts at zero, so
the query starts exactly where text alone is and fine-tuning can only move it from there (a fresh
head on the fused CLS started below text alone: 0.109 against 0.154 R@1, issue 15). Fine-tuning: symmetric InfoNCE (HN-NCE with `task.hard_negatives` > 0)
over the three modality pairs plus the fused query against the image. With `task.rerank_k` > 0 (config, default 0) the
top-k images of each text+audio query are re-ranked by the matching head (class 0 = matched).

Prompts (opt.data.prompts: the scene's shapes, never their colours) where the records have them:
prompt -> image and prompt+audio -> image (the same fused query with the prompt as its text), in
fine-tuning and evaluation; the narration's audio holds what the prompt leaves out, so the second
beats the first only if fusion uses the audio (the paper's claim, issue 15).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opt.data.prompts import split_prompts
from opt.data.splits import batches
from opt.model.encoders import Modality, trim_to_content
from opt.model.objectives import contrastive_loss
from opt.tasks import register
from opt.tasks.base import Task, text_batch
from opt.tasks.metrics import chance_recall, recall_at_k, rerank_top_k

T, I, A = Modality.TEXT, Modality.IMAGE, Modality.AUDIO
DIRECTIONS = {
    "text_to_image": (T, I),
    "image_to_text": (I, T),
    "audio_to_image": (A, I),
    "image_to_audio": (I, A),
    "text_to_audio": (T, A),
    "audio_to_text": (A, T),
}
FUSED = "text_audio_to_image"
PROMPT, PROMPT_FUSED = "prompt_to_image", "prompt_audio_to_image"
PAIRS = ((T, I), (A, I), (T, A))


def prepare(model, batch: dict, device) -> dict:
    """Batch to device, shared padding trimmed."""
    batch = {k: v.to(device) for k, v in batch.items()}
    return trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)


def fused_query(model, heads: nn.Module, encoded: dict) -> Tensor:
    """Unit query (B,D): the text projection plus the `query` head of the fused CLS of text and audio."""
    fused = model.fuse({T: encoded[T], A: encoded[A]})
    text = model.project[T](encoded[T].tokens[:, 0])
    return F.normalize((text + heads["query"](fused.tokens[:, 0])).float(), dim=-1)


def embeddings(model, heads: nn.Module, batch: dict, prompt: dict | None = None) -> dict:
    """modality -> (B,D) unit embeddings, FUSED -> (B,D) the text+audio query; with `prompt` (a
    text input of the batch's prompts) also PROMPT and PROMPT_FUSED (the prompt+audio query)."""
    encoded = model.encode(batch)
    out = {m: model.embed(encoded[m], m) for m in Modality}
    out[FUSED] = fused_query(model, heads, encoded)
    if prompt is not None:
        text = model.encode(prompt, (T,))[T]
        out[PROMPT] = model.embed(text, T)
        out[PROMPT_FUSED] = fused_query(model, heads, {T: text, A: encoded[A]})
    return out


def prompt_input(records: list[dict], batch: dict, tokenizer, device) -> dict | None:
    """The text input of the prompts of the batch's items, or None where a record has no prompt."""
    prompts = split_prompts([records[i] for i in batch["index"].tolist()])
    return None if prompts is None else text_batch(tokenizer, prompts, device)


def matched_score(model, dataset, q: int, candidates: Tensor, device) -> Tensor:
    """Log-probability (k,) that query q's text+audio and each candidate image are all matched."""
    query = dataset[q]
    items = [{**query, "image": dataset[int(j)]["image"]} for j in candidates]
    batch = prepare(model, {k: torch.stack([it[k] for it in items]) for k in query}, device)
    fused = model.fuse(model.encode(batch))
    return model.heads["matching"](fused.tokens[:, 0]).float().log_softmax(-1)[:, 0].cpu()


@register
class Retrieval(Task):
    name = "retrieval"

    def heads(self, model, context) -> nn.Module:
        d = model.cfg.dim
        query = nn.Linear(d, d)
        nn.init.zeros_(query.weight)  # a zero residual: the text+audio query starts as the text query
        nn.init.zeros_(query.bias)
        return nn.ModuleDict({"query": query})

    def has_prompts(self, context, split: str) -> bool:
        return split_prompts(self.records(context, split)) is not None

    def losses(self, model, heads, batch, draw, context) -> dict:
        prompt = prompt_input(self.records(context, "train"), batch, context.tokenizer, context.device)
        emb = embeddings(model, heads, prepare(model, batch, context.device), prompt)
        scale, beta = model.logit_scale, float(context.cfg.task.hard_negatives)
        pairs = PAIRS + (((PROMPT, I),) if prompt is not None else ())
        queries = (FUSED, PROMPT_FUSED) if prompt is not None else (FUSED,)
        pair = torch.stack([contrastive_loss(emb[a], emb[b], scale, beta) for a, b in pairs]).mean()
        query = torch.stack([contrastive_loss(emb[q], emb[I], scale, beta) for q in queries]).mean()
        total = pair + query
        return {"loss": total, "retrieval_loss": total, "retrieval_pair_loss": pair, "retrieval_query_loss": query}

    @torch.no_grad()
    def split_embeddings(self, model, heads, dataset, device, batch_size: int = 64, prompts=None) -> dict:
        """modality / FUSED (/ PROMPT, PROMPT_FUSED with `prompts`: (records, tokenizer)) -> (N,D)
        unit embeddings of a whole split (on CPU)."""
        parts: dict = {}
        for batch in batches(dataset, batch_size):
            prompt = prompt_input(prompts[0], batch, prompts[1], device) if prompts else None
            for key, value in embeddings(model, heads, prepare(model, batch, device), prompt).items():
                parts.setdefault(key, []).append(value.cpu())
        return {k: torch.cat(v) for k, v in parts.items()}

    def query_names(self, context, split: str) -> list[str]:
        """The text+audio (and prompt) query directions reported on `split`."""
        prompts = [PROMPT, PROMPT_FUSED] if self.has_prompts(context, split) else []
        return [FUSED, *prompts] + ([f"{FUSED}_reranked"] if int(context.cfg.task.rerank_k) > 0 else [])

    @torch.no_grad()
    def evaluate(self, model, heads, split, context) -> dict:
        model.eval()
        heads.eval()
        dataset = context.split(split)
        prompts = (self.records(context, split), context.tokenizer) if self.has_prompts(context, split) else None
        emb = self.split_embeddings(model, heads, dataset, context.device, prompts=prompts)
        sims = {name: emb[q] @ emb[g].t() for name, (q, g) in DIRECTIONS.items()}
        sims.update({name: emb[name] @ emb[I].t() for name in (FUSED, PROMPT, PROMPT_FUSED) if name in emb})
        k = int(context.cfg.task.rerank_k)
        if k > 0:
            rescore = lambda q, cands: matched_score(model, dataset, q, cands, context.device)  # noqa: E731
            sims[f"{FUSED}_reranked"] = rerank_top_k(sims[FUSED], k, rescore)
        return {f"{name}/{r}": v for name, sim in sims.items() for r, v in recall_at_k(sim).items()}

    def blind(self, split, context) -> dict:
        """Chance: a random ranking of the split's gallery puts the match in the top k with odds k/N."""
        names = [*DIRECTIONS, *self.query_names(context, split)]
        chance = chance_recall(len(context.split(split)))
        return {f"{name}/{r}": v for name in names for r, v in chance.items()}
