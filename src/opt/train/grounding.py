"""Word grounding: does the cross-modal encoder read attribute words from the image?

Every colour word (then every shape word) of each caption is replaced by [MASK]; the caption is
fused with the image only, the audio only, both, or neither; and the MLM head picks, at each
masked position, among the scene vocabulary's colour (shape) words. Accuracy stands beside
chance (1 / words in the group): a fusion that reads the image scores clearly above `none`
with `image`, and a fusion that reads the narration (the caption spoken) above it with `audio`.
A tie with the true word counts as wrong, so a constant head scores 0.

Needs records with ground-truth objects (the built-in data); words the caption tokenizer
splits into several tokens are left out of their group.
"""

from __future__ import annotations

import torch
from torch import Tensor

from opt.data.questions import scene_vocab
from opt.data.splits import batches
from opt.model.encoders import Modality, trim_to_content

CONTEXTS = {
    "image": (Modality.IMAGE,),
    "audio": (Modality.AUDIO,),
    "both": (Modality.IMAGE, Modality.AUDIO),
    "none": (),
}
GROUPS = {"colour": "colours", "shape": "shapes"}  # group -> its key in opt.data.questions.scene_vocab


def single_token_ids(tokenizer, words: list[str]) -> list[int]:
    """Ids of the words the caption tokenizer spells as one token ([CLS] word [SEP])."""
    if not words:
        return []
    ids, counts = tokenizer.encode(words)
    return [int(row[1]) for row, n in zip(ids, counts) if n == 3]


def group_hits(logits: Tensor, labels: Tensor, group: Tensor) -> Tensor:
    """(N,V) logits, (N,) true ids, (G,) the group's ids -> (N,) bool: the true word's logit is
    strictly above every other word of the group."""
    scores = logits[:, group]  # (N,G)
    true = logits.gather(1, labels[:, None])  # (N,1)
    others = scores.masked_fill(group[None, :] == labels[:, None], float("-inf"))
    return true[:, 0] > others.amax(dim=1)


@torch.no_grad()
def word_grounding(model, dataset, tokenizer, device, batch_size: int = 64) -> dict:
    """group -> {context: accuracy, "chance": 1/G, "words": masked words scored}; {} without
    ground-truth objects (module docstring)."""
    records = dataset.records()
    if not all(r.get("objects") for r in records):
        return {}
    vocab = scene_vocab(records)
    groups = {g: torch.tensor(single_token_ids(tokenizer, vocab[key])) for g, key in GROUPS.items()}
    groups = {g: ids.to(device) for g, ids in groups.items() if len(ids) >= 2}
    hits = {g: {c: [] for c in CONTEXTS} for g in groups}
    model.eval()
    pf, max_patches = model.cfg.audio_patch_frames, model.cfg.max_audio_patches
    for batch in batches(dataset, batch_size):
        batch = trim_to_content({k: v.to(device) for k, v in batch.items()}, pf, max_patches)
        encoded = model.encode(batch, (Modality.IMAGE, Modality.AUDIO))
        for g, ids in groups.items():
            target = torch.isin(batch["tokens"], ids)  # (B,L)
            text = model.encode(
                {**batch, "tokens": batch["tokens"].masked_fill(target, tokenizer.mask_id)}, (Modality.TEXT,)
            )
            for context, modalities in CONTEXTS.items():
                fused = model.fuse({**text, **{m: encoded[m] for m in modalities}})
                logits = model.heads["mlm"](fused.tokens[:, fused.spans[Modality.TEXT]][:, 1:])  # (B,L,V)
                hits[g][context].append(group_hits(logits[target].float(), batch["tokens"][target], ids).cpu())
    out = {}
    for g, ids in groups.items():
        scored = {c: torch.cat(h) for c, h in hits[g].items()}
        out[g] = {c: float(h.float().mean()) if len(h) else 0.0 for c, h in scored.items()}
        out[g].update(chance=1 / len(ids), words=len(scored["none"]))
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m opt.train.grounding [--split val] paths.root=RUN`: a pre-trained model's grounding."""
    import argparse
    import json

    from opt.artifacts import load_pretrained, load_tokenizer, training_split
    from opt.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. paths.root=RUN")
    args = parser.parse_args(argv)
    cfg = load_config(args.overrides)
    model, tokenizer = load_pretrained(cfg), load_tokenizer(cfg)
    print(json.dumps(word_grounding(model, training_split(cfg, args.split), tokenizer, torch.device("cpu")), indent=1))


if __name__ == "__main__":
    main()
