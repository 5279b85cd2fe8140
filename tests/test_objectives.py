"""Pretext objectives: contrastive sign, each loss falls on a repeated batch, ablations."""

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import random_batch, tiny_model
from trainer_fixtures import SPECIAL

from opt.config import load_config
from opt.model.encoders import Modality
from opt.model.masking import Draw
from opt.model.objectives import contrastive_loss
from opt.model.pretext import pretext_losses

ALL_LOSSES = {
    "mlm_loss",
    "mvm_code_loss",
    "mvm_pixel_loss",
    "mam_regression_loss",
    "mam_contrastive_loss",
    "text_denoise_loss",
    "image_denoise_loss",
    "contrastive_loss",
    "matching_loss",
}


def objectives(preset="all", **overrides):
    cfg = load_config([f"objectives={preset}"]).objectives
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def test_contrastive_loss_is_lower_for_aligned_pairs_than_shuffled():
    """The official OPT code rewarded a lower cosine for the positive pair; ours must not."""
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(16, 32, generator=g), dim=-1)
    b = F.normalize(a + 0.1 * torch.randn(16, 32, generator=g), dim=-1)
    scale = torch.tensor(2.0)
    aligned = contrastive_loss(a, b, scale)
    shuffled = contrastive_loss(a, b[torch.roll(torch.arange(16), 1)], scale)
    assert aligned < shuffled
    assert aligned < torch.log(torch.tensor(16.0))  # better than chance


def test_every_objective_is_reported_and_the_total_is_their_weighted_sum():
    model, o = tiny_model(), objectives(mlm=2.0)
    losses = pretext_losses(model, random_batch(6), o, SPECIAL, Draw(torch.Generator().manual_seed(0)))
    assert set(losses) == ALL_LOSSES | {"loss"}
    expected = sum(v for k, v in losses.items() if k != "loss") + losses["mlm_loss"]
    assert torch.allclose(losses["loss"], expected)


@pytest.mark.parametrize(
    "preset,absent",
    [
        (
            "no_token",
            {
                "mlm_loss",
                "mvm_code_loss",
                "mvm_pixel_loss",
                "mam_regression_loss",
                "mam_contrastive_loss",
                "text_denoise_loss",
                "image_denoise_loss",
            },
        ),
        ("no_sample", {"contrastive_loss", "matching_loss"}),
        ("image_text", {"mam_regression_loss", "mam_contrastive_loss"}),
    ],
)
def test_ablation_presets_switch_their_objectives_off(preset, absent):
    losses = pretext_losses(
        tiny_model(), random_batch(6), objectives(preset), SPECIAL, Draw(torch.Generator().manual_seed(0))
    )
    assert set(losses) == (ALL_LOSSES - absent) | {"loss"}


def test_image_text_preset_never_reads_audio():
    batch = random_batch(6)
    batch["mel"] = torch.full_like(batch["mel"], float("nan"))
    losses = pretext_losses(
        tiny_model(), batch, objectives("image_text"), SPECIAL, Draw(torch.Generator().manual_seed(0))
    )
    assert torch.isfinite(losses["loss"])


def test_each_objective_falls_when_a_tiny_batch_is_repeated():
    torch.manual_seed(0)
    model, batch, o = tiny_model(seed=1), random_batch(6, seed=2), objectives(drop_text=0, drop_image=0, drop_audio=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first, last = None, None
    for step in range(40):
        losses = pretext_losses(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(step % 2)))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        values = {k: float(v.detach()) for k, v in losses.items()}
        first = first or values
        last = values
    for name in ALL_LOSSES:
        assert last[name] < first[name], f"{name} did not fall: {first[name]:.3f} -> {last[name]:.3f}"


def test_sample_level_objectives_see_the_unmasked_inputs(monkeypatch):
    """Contrastive and matching compare whole samples: they get the encodings of the clean batch,
    not those of the pass that masks tokens and patches for the token-level objectives."""
    from opt.model import pretext
    from opt.model.encoders import trim_to_content

    model, batch, seen = tiny_model(), random_batch(6), {}
    real = pretext.sample_level

    def spy(model_, encoded, o, g):
        seen.update(encoded)
        return real(model_, encoded, o, g)

    monkeypatch.setattr(pretext, "sample_level", spy)
    o = objectives(text_mask_ratio=0.5, image_mask_ratio=0.5, audio_mask_ratio=0.5)
    pretext_losses(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(0)))
    trimmed = trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
    clean = model.encode(trimmed, tuple(seen))
    masked_batch, masks, _ = pretext.mask_batch(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(0)))
    masked = model.encode(masked_batch, tuple(seen), masks)
    assert set(seen) == {Modality.TEXT, Modality.IMAGE, Modality.AUDIO}
    for m, encoded in seen.items():
        assert torch.allclose(encoded.tokens, clean[m].tokens)
        assert not torch.allclose(encoded.tokens, masked[m].tokens)  # the spy would see a masked pass


def test_the_contrastive_loss_does_not_depend_on_the_masking_draw():
    model, batch = tiny_model(), random_batch(6)
    o = objectives(mlm=0.0, mvm=0.0, mam=0.0, text_denoise=0.0, image_denoise=0.0, matching=0.0)
    losses = [
        pretext_losses(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(seed)))["contrastive_loss"]
        for seed in (0, 1)
    ]
    assert torch.allclose(losses[0], losses[1])
