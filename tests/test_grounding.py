"""Word grounding (opt.train.grounding): the scoring rule, its alignment with MLM pre-training,
and the pre-training stage's report."""

from __future__ import annotations

import json

import pytest
import torch

from opt.artifacts import load_pretrained, load_tokenizer, training_split
from opt.config import load_config
from opt.data.splits import batches
from opt.model.encoders import Modality
from opt.model.masking import IGNORE
from opt.model.objectives import mlm_loss
from opt.train.grounding import CONTEXTS, group_hits, main, masked_word_logits, swap_test, word_grounding, word_sets

GROUP = torch.tensor([3, 5, 7])


def test_group_hits_needs_the_true_word_strictly_above_the_rest_of_its_group():
    labels = torch.tensor([3, 5, 7, 5])
    right = torch.nn.functional.one_hot(labels, 10).float()
    assert group_hits(right, labels, GROUP).all()
    assert not group_hits(torch.zeros(4, 10), labels, GROUP).any()  # a constant head: ties score nothing
    wrong = torch.nn.functional.one_hot(labels.roll(1), 10).float()  # favours another word of the group
    assert not group_hits(wrong, labels, GROUP).any()
    outside = right.clone()
    outside[:, 0] = 9.0  # a higher logit outside the group does not count against the pick
    assert group_hits(outside, labels, GROUP).all()
    with pytest.raises(ValueError, match="non-finite"):
        group_hits(right.masked_fill(right > 0, float("nan")), labels, GROUP)


def test_masked_words_are_scored_where_mlm_pretraining_scores_them(pretrained_synth):
    """Cross-entropy of the grounding logits equals `mlm_loss` on the same masked caption: the
    same positions, the same fused tokens, the same head."""
    cfg = load_config(pretrained_synth[1])
    model, tokenizer, test = load_pretrained(cfg).eval(), load_tokenizer(cfg), training_split(cfg, "test")
    ids = torch.cat(word_sets(test.records(), tokenizer)["colour"])
    batch = next(iter(batches(test, 16)))
    target = torch.isin(batch["tokens"], ids)
    assert target.any()
    masked = {**batch, "tokens": batch["tokens"].masked_fill(target, tokenizer.mask_id)}
    with torch.no_grad():
        text = model.encode(masked, (Modality.TEXT,))
        image = model.encode(batch, (Modality.IMAGE,))
        logits = masked_word_logits(model, text, image, target)
        fused = model.fuse({**text, **image})
        expected = mlm_loss(
            model, fused.tokens[:, fused.spans[Modality.TEXT]], batch["tokens"].masked_fill(~target, IGNORE)
        )
    got = torch.nn.functional.cross_entropy(logits, batch["tokens"][target])
    assert torch.allclose(got, expected, atol=1e-5)


def test_pretraining_reports_grounding_of_every_masked_attribute_word(pretrained_synth, capsys):
    root, overrides = pretrained_synth
    cfg = load_config(overrides)
    reported = json.loads((root / "metrics" / "pretrain.json").read_text())["grounding"]
    test, tokenizer = training_split(cfg, "test"), load_tokenizer(cfg)
    assert reported and set(reported) <= {"colour", "shape"}
    tokens = torch.cat([batch["tokens"] for batch in batches(test, 64)])
    sets = word_sets(test.records(), tokenizer)
    for group, scores in reported.items():
        assert scores["words"] == int(torch.isin(tokens, torch.cat(sets[group])).sum()) > 0
        assert set(scores) == {*CONTEXTS, "chance", "words"}
        assert all(0.0 <= scores[c] <= 1.0 for c in CONTEXTS) and 0 < scores["chance"] <= 0.5
    main(["--split", "test", *overrides])  # python -m opt.train.grounding, on the saved model
    assert json.loads(capsys.readouterr().out) == reported


def test_shape_words_include_plurals_and_audio_contexts_follow_the_model(pretrained_synth):
    cfg = load_config(pretrained_synth[1])
    model, tokenizer, test = load_pretrained(cfg), load_tokenizer(cfg), training_split(cfg, "test")
    decoded = [tokenizer.decode([int(i)]).strip() for ids in word_sets(test.records(), tokenizer)["shape"] for i in ids]
    shapes = {o["shape"] for r in test.records() for o in r["objects"]}
    assert shapes & set(decoded) and {w for w in decoded if w not in shapes}  # singulars and plurals
    without_audio = word_grounding(model, test, tokenizer, torch.device("cpu"), with_audio=False)
    assert all(set(s) == {"image", "none", "chance", "words"} for s in without_audio.values())


def test_no_grounding_without_ground_truth_objects(pretrained_synth):
    cfg = load_config(pretrained_synth[1])
    test = training_split(cfg, "test")
    test.records = lambda: [{k: v for k, v in r.items() if k != "objects"} for r in type(test).records(test)]
    assert word_grounding(load_pretrained(cfg), test, load_tokenizer(cfg), torch.device("cpu")) == {}


def test_swap_groups_are_the_scenes_shape_words_as_the_tokenizer_spells_them(pretrained_synth):
    from opt.data.scenes import SHAPES
    from opt.train.pretrain import swap_groups

    cfg = load_config(pretrained_synth[1])
    tokenizer, records = load_tokenizer(cfg), training_split(cfg, "train").records()
    groups = swap_groups(["shape"], records, tokenizer)
    words = [{tokenizer.decode([i]).strip() for i in g.tolist()} for g in groups]
    assert groups and words[0] <= set(SHAPES) and len(words[0]) >= 2  # singular shapes first, then plurals
    assert swap_groups([], records, tokenizer) == ()
    with pytest.raises(ValueError, match="unknown word groups"):
        swap_groups(["size"], records, tokenizer)


def test_swap_test_scores_a_model_whose_captions_embed_alike_at_zero(pretrained_synth, monkeypatch):
    """Each group's share lies in [0, 1]; a text embedding that ignores the caption ties every swap,
    and a tie counts as wrong."""
    cfg = load_config(pretrained_synth[1])
    model, tokenizer, test = load_pretrained(cfg).eval(), load_tokenizer(cfg), training_split(cfg, "test")
    shares = swap_test(model, test, tokenizer, torch.device("cpu"))
    assert set(shares) == {"colour", "shape"} and all(0.0 <= v <= 1.0 for v in shares.values())
    real = model.embed
    constant = lambda encoded, m: real(encoded, m) if m != Modality.TEXT else torch.ones_like(real(encoded, m))  # noqa: E731
    monkeypatch.setattr(model, "embed", constant)
    assert swap_test(model, test, tokenizer, torch.device("cpu")) == {"colour": 0.0, "shape": 0.0}
