"""Word grounding: does the cross-modal encoder read attribute words from the image?

Every colour word (then every shape word, singular or plural) of each caption is replaced by
[MASK]; the caption is fused with the image only, the audio only, both, or neither; and the MLM
head picks, at each masked position, among the words of its kind: the scene vocabulary's colours,
its shapes, or their plurals. Accuracy stands beside chance (1 / words to pick from): a fusion that
reads the image scores clearly above `none` with `image`, and one that reads the narration (the
caption spoken) above it with `audio`. A tie with the true word counts as wrong, so a constant
head scores 0.

`swap_test` asks the same of the contrastive embeddings: is each image closer to its caption than
to the caption with one colour (shape) word swapped?

Needs records with ground-truth objects (the built-in data); words the caption tokenizer splits
into several tokens are left out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from opt.data.grammar import pluralize
from opt.data.questions import scene_vocab
from opt.data.splits import batches
from opt.model.encoders import Modality, trim_to_content
from opt.model.masking import Draw, swap_words
from opt.model.objectives import mlm_logits

CONTEXTS = {
    "image": (Modality.IMAGE,),
    "audio": (Modality.AUDIO,),
    "both": (Modality.IMAGE, Modality.AUDIO),
    "none": (),
}


def single_token_ids(tokenizer, words: list[str]) -> list[int]:
    """Ids of the words the caption tokenizer spells as one token ([CLS] word [SEP])."""
    if not words:
        return []
    ids, counts = tokenizer.encode(words)
    return [int(row[1]) for row, n in zip(ids, counts) if n == 3]


def word_sets(records: list[dict], tokenizer) -> dict[str, list[Tensor]]:
    """group -> the id sets (each (G,), G >= 2) a masked word of that group is picked among."""
    vocab = scene_vocab(records)
    sets = {
        "colour": [vocab["colours"]],
        "shape": [vocab["shapes"], [pluralize(s) for s in vocab["shapes"]]],
    }
    out = {}
    for group, word_lists in sets.items():
        ids = [torch.tensor(single_token_ids(tokenizer, words)) for words in word_lists]
        if ids := [i for i in ids if len(i) >= 2]:
            out[group] = ids
    return out


def group_hits(logits: Tensor, labels: Tensor, group: Tensor) -> Tensor:
    """(N,V) logits, (N,) true ids, (G,) the ids to pick among -> (N,) bool: the true word's logit
    is strictly above every other word of the group."""
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("non-finite MLM logits: the model's outputs are not finite")
    scores = logits[:, group]  # (N,G)
    true = logits.gather(1, labels[:, None])  # (N,1)
    others = scores.masked_fill(group[None, :] == labels[:, None], float("-inf"))
    return true[:, 0] > others.amax(dim=1)


def masked_word_logits(model, text: dict, context: dict, target: Tensor) -> Tensor:
    """MLM logits (K,V) at the K positions `target` (B,L) of the text input, whose tokens are
    already [MASK], fused with `context` (modality -> Encoded); read as `mlm_loss` reads them."""
    fused = model.fuse({**text, **context})
    return mlm_logits(model, fused.tokens[:, fused.spans[Modality.TEXT]])[target].float()


@torch.no_grad()
def word_grounding(model, dataset, tokenizer, device, with_audio: bool = True, batch_size: int = 64) -> dict:
    """group -> {context: accuracy (None without words), "chance": mean 1/G, "words": masked words
    scored}; {} without ground-truth objects (module docstring). `with_audio=False` (a model
    pre-trained without audio) leaves out the contexts that hold audio."""
    sets = word_sets([r for r in dataset.records() if r.get("objects")], tokenizer)
    if not sets:
        return {}
    sets = {g: [ids.to(device) for ids in id_sets] for g, id_sets in sets.items()}
    contexts = {c: m for c, m in CONTEXTS.items() if with_audio or Modality.AUDIO not in m}
    hits = {g: dict.fromkeys(contexts, 0) for g in sets}
    words, chance = dict.fromkeys(sets, 0), dict.fromkeys(sets, 0.0)
    model.eval()
    pf, max_patches = model.cfg.audio_patch_frames, model.cfg.max_audio_patches
    for batch in batches(dataset, batch_size):
        batch = trim_to_content({k: v.to(device) for k, v in batch.items()}, pf, max_patches)
        encoded = model.encode(
            batch, [m for m in (Modality.IMAGE, Modality.AUDIO) if with_audio or m != Modality.AUDIO]
        )
        for g, id_sets in sets.items():
            target = torch.isin(batch["tokens"], torch.cat(id_sets))  # (B,L)
            labels = batch["tokens"][target]  # (K,)
            text = model.encode(
                {**batch, "tokens": batch["tokens"].masked_fill(target, tokenizer.mask_id)}, (Modality.TEXT,)
            )
            owners = [torch.isin(labels, ids) for ids in id_sets]  # which set each masked word is picked among
            words[g] += len(labels)
            chance[g] += sum(int(own.sum()) / len(ids) for own, ids in zip(owners, id_sets))
            for c, modalities in contexts.items():
                logits = masked_word_logits(model, text, {m: encoded[m] for m in modalities}, target)
                hits[g][c] += sum(
                    int(group_hits(logits[own], labels[own], ids).sum()) for own, ids in zip(owners, id_sets)
                )
    return {
        g: {
            **{c: h / words[g] if words[g] else None for c, h in hits[g].items()},
            "chance": chance[g] / words[g] if words[g] else None,
            "words": words[g],
        }
        for g in sets
    }


@torch.no_grad()
def swap_test(model, dataset, tokenizer, device, batch_size: int = 64, seed: int = 0) -> dict:
    """group -> share of images whose embedding is closer to their caption's than to the same caption
    with one word of the group swapped for another (masking.swap_words; chance 0.5, a tie counts as
    wrong), over the captions that hold such a word; {} without ground-truth objects. It tests the
    contrastive embeddings (what retrieval reads), where word grounding tests the fusion."""
    sets = word_sets([r for r in dataset.records() if r.get("objects")], tokenizer)
    draw = Draw(torch.Generator().manual_seed(seed))
    wins, total = dict.fromkeys(sets, 0), dict.fromkeys(sets, 0)
    model.eval()
    for batch in batches(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        encoded = model.encode(batch, (Modality.TEXT, Modality.IMAGE))
        image = model.embed(encoded[Modality.IMAGE], Modality.IMAGE)  # (B,D) unit
        true = (model.embed(encoded[Modality.TEXT], Modality.TEXT) * image).sum(-1)
        for g, id_sets in sets.items():
            swapped, has = swap_words(batch["tokens"], batch["token_count"], id_sets, draw)
            text = model.encode({"tokens": swapped, "token_count": batch["token_count"]}, (Modality.TEXT,))
            other = (model.embed(text[Modality.TEXT], Modality.TEXT) * image).sum(-1)
            wins[g] += int((true > other)[has].sum())
            total[g] += int(has.sum())
    return {g: wins[g] / total[g] if total[g] else None for g in sets}


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
    model, tokenizer, split = load_pretrained(cfg), load_tokenizer(cfg), training_split(cfg, args.split)
    grounding = word_grounding(model, split, tokenizer, torch.device("cpu"), bool(cfg.objectives.use_audio))
    print(json.dumps(grounding, indent=1))


if __name__ == "__main__":
    main()
