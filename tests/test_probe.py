"""The text-to-image probe: it learns attributes of small objects and judges unseen images."""

import shutil

import numpy as np
import torch

from opt import probe as probe_module
from opt.config import load_config
from opt.probe import augment, judge, train_probe
from opt.tasks.generation_metrics import label_set_accuracy

COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.7, 0.2], [0.1, 0.2, 0.9], [0.9, 0.8, 0.1]])


def scenes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n white 32x32 images with one small square of one of four colours -> uint8 (n,3,32,32), (n,4) bool."""
    g = torch.Generator().manual_seed(seed)
    images = torch.ones(n, 3, 32, 32)
    labels = torch.zeros(n, len(COLOURS), dtype=torch.bool)
    for i in range(n):
        c = int(torch.randint(len(COLOURS), (1,), generator=g))
        y, x = torch.randint(0, 26, (2,), generator=g).tolist()
        images[i, :, y : y + 6, x : x + 6] = COLOURS[c][:, None, None]
        labels[i, c] = True
    return (images * 255).round().to(torch.uint8), labels


def test_probe_judges_unseen_images_in_eval_mode():
    """Small objects in mostly blank images, judged one batch at a time in eval mode."""
    train_images, train_labels = scenes(96, seed=0)
    test_images, test_labels = scenes(64, seed=1)
    probe = train_probe(train_images, train_labels, steps=150)
    assert not probe.training
    predicted, features = judge(probe, test_images.float() / 255)
    assert predicted.shape == (64, len(COLOURS)) and features.shape[0] == 64
    assert label_set_accuracy(predicted, test_labels.numpy()) > 0.9


def test_augment_flips_and_shifts_without_changing_shape_or_colours():
    images, _ = scenes(8, seed=2)
    x = images.float() / 255
    out = augment(x, torch.Generator().manual_seed(0), shift=3)
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    for i in range(len(x)):  # the square moved at most 3 pixels, its colour kept
        assert np.isclose(float(out[i].min()), float(x[i].min()), atol=1e-6)


def test_a_saved_probe_is_reused_only_by_the_code_that_trained_it(prepared_synth, tmp_path, monkeypatch, capsys):
    """Same data, steps and code: the saved probe is kept; other code (a changed digest): retrained."""
    source, overrides = prepared_synth
    root = tmp_path / "run"
    shutil.copytree(source, root)
    cfg = load_config([*overrides, f"paths.root={root}", "task.probe_steps=3"])

    def trained() -> bool:
        probe_module.probe(cfg)
        return "training the text-to-image judge" in capsys.readouterr().out

    assert trained()
    assert not trained()
    monkeypatch.setattr(probe_module, "code_digest", lambda module: "the digest of other code")
    assert trained()
    assert not trained()
