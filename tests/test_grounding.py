"""Word grounding (opt.train.grounding): the scoring rule, and the pre-training stage's report."""

from __future__ import annotations

import json

import torch

from opt.artifacts import load_pretrained, load_tokenizer, training_split
from opt.config import load_config
from opt.data.splits import batches
from opt.train.grounding import CONTEXTS, group_hits, main, single_token_ids, word_grounding

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


def test_pretraining_reports_grounding_of_every_masked_attribute_word(pretrained_synth, capsys):
    root, overrides = pretrained_synth
    cfg = load_config(overrides)
    reported = json.loads((root / "metrics" / "pretrain.json").read_text())["grounding"]
    test, tokenizer = training_split(cfg, "test"), load_tokenizer(cfg)
    assert reported and set(reported) <= {"colour", "shape"}
    tokens = torch.cat([batch["tokens"] for batch in batches(test, 64)])
    for group, scores in reported.items():
        words = {o[{"colour": "color", "shape": "shape"}[group]] for r in test.records() for o in r["objects"]}
        ids = single_token_ids(tokenizer, sorted(words))
        assert scores["words"] == int(torch.isin(tokens, torch.tensor(ids)).sum()) > 0
        assert set(scores) == {*CONTEXTS, "chance", "words"}
        assert all(0.0 <= scores[c] <= 1.0 for c in CONTEXTS) and 0 < scores["chance"] <= 0.5
    main(["--split", "test", *overrides])  # python -m opt.train.grounding, on the saved model
    assert json.loads(capsys.readouterr().out) == reported


def test_no_grounding_without_ground_truth_objects(pretrained_synth):
    cfg = load_config(pretrained_synth[1])
    test = training_split(cfg, "test")
    test.records = lambda: [{k: v for k, v in r.items() if k != "objects"} for r in type(test).records(test)]
    assert word_grounding(load_pretrained(cfg), test, load_tokenizer(cfg), torch.device("cpu")) == {}
