"""Pretext objectives: contrastive sign, each loss falls on a repeated batch, ablations."""

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import random_batch, tiny_model
from trainer_fixtures import SPECIAL

from opt.config import load_config
from opt.model import objectives as objectives_module
from opt.model.encoders import Modality
from opt.model.masking import Draw
from opt.model.objectives import contrastive_loss, decoder_loss, hard_negative_logits
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


def test_hard_negatives_weigh_each_negative_by_its_logit_and_keep_the_positive():
    """HN-NCE: weights exp(beta * logit) with mean 1 over a row's negatives (beta 0: InfoNCE), ordered
    as the negatives' logits, so the loss grows with beta where negatives differ."""
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    b = F.normalize(a + 0.5 * torch.randn(8, 16, generator=g), dim=-1)
    scale = torch.tensor(2.0)
    logits = scale.exp() * a @ b.t()
    assert torch.allclose(hard_negative_logits(logits, 0.0), logits, atol=1e-6)
    reweighted = hard_negative_logits(logits, 0.5)
    off = ~torch.eye(8, dtype=torch.bool)
    weights = (reweighted - logits).exp()
    assert torch.allclose(weights.diagonal(), torch.ones(8))
    row = lambda x: x[off].reshape(8, 7)  # noqa: E731  each row's negatives
    assert torch.equal(row(weights).argsort(dim=1), row(logits).argsort(dim=1))  # the harder, the heavier
    assert torch.allclose(row(weights).mean(dim=1), torch.ones(8), atol=1e-5)
    plain, hard = contrastive_loss(a, b, scale), contrastive_loss(a, b, scale, hard_negatives=0.5)
    assert hard > plain
    aligned = contrastive_loss(a, b, scale, hard_negatives=0.5)
    assert aligned < contrastive_loss(a, b[torch.roll(torch.arange(8), 1)], scale, hard_negatives=0.5)


def test_extra_negative_captions_count_only_where_valid_and_more_the_closer_they_are():
    """NegCLIP: each b row also ranks its positive a above the extra candidates; a candidate equal to
    the positive raises the loss, a left-out one changes nothing."""
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    b = F.normalize(a + 0.3 * torch.randn(8, 16, generator=g), dim=-1)
    scale, far = torch.tensor(2.0), F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    plain = contrastive_loss(a, b, scale)
    none_valid = torch.zeros(8, dtype=torch.bool)
    assert torch.allclose(contrastive_loss(a, b, scale, 0.0, a.clone(), none_valid), plain)
    valid = torch.ones(8, dtype=torch.bool)
    close, distant = (
        contrastive_loss(a, b, scale, 0.0, a.clone(), valid),
        contrastive_loss(a, b, scale, 0.0, far, valid),
    )
    assert plain < distant < close


def test_swap_negatives_add_captions_with_a_swapped_word_to_the_text_image_contrast(monkeypatch):
    from dataclasses import replace

    from opt.model import pretext

    batch, seen, real = random_batch(6), {}, objectives_module.contrastive_loss
    groups = (torch.tensor(sorted(set(batch["tokens"][:, 1].tolist()))),)  # every caption's first word swaps

    def spy(a, b, scale, beta=0.0, extra_a=None, extra_valid=None):
        seen.setdefault("extra", []).append(None if extra_a is None else (extra_a.shape, extra_valid.clone()))
        return real(a, b, scale, beta, extra_a, extra_valid)

    monkeypatch.setattr(objectives_module, "contrastive_loss", spy)
    o = objectives(swap_negatives=["shape"])
    losses = pretext.pretext_losses(
        tiny_model(), batch, o, replace(SPECIAL, swap_groups=groups), Draw(torch.Generator())
    )
    (shape, valid), *others = seen["extra"]  # the text-image pair comes first
    assert shape[0] == 6 and bool(valid.all()) and others == [None, None] and torch.isfinite(losses["loss"])
    with pytest.raises(ValueError, match="swap_negatives"):
        pretext.pretext_losses(tiny_model(), batch, o, SPECIAL, Draw(torch.Generator()))


def test_every_objective_is_reported_and_the_total_is_their_weighted_sum():
    model = tiny_model()
    o = objectives(mlm=2.0, matching=1.0, mvm=0.5, mvm_pixel=4.0, mam_regression=3.0)
    losses = pretext_losses(model, random_batch(6), o, SPECIAL, Draw(torch.Generator().manual_seed(0)))
    assert set(losses) == ALL_LOSSES | {"loss"}
    factor = {"mlm_loss": 2.0, "mvm_code_loss": 0.5, "mvm_pixel_loss": 2.0, "mam_regression_loss": 3.0}
    expected = sum(factor.get(k, 1.0) * v for k, v in losses.items() if k != "loss")
    assert torch.allclose(losses["loss"], expected)


def test_a_zero_factor_drops_only_that_regression_part_and_leaves_its_head_untrained():
    """mvm_pixel=0 / mam_regression=0 switch off MVM's pixels and MAM's mel regression; the code
    and contrast parts of MVM and MAM stay."""
    model = tiny_model()
    o = objectives(mvm_pixel=0.0, mam_regression=0.0)
    losses = pretext_losses(model, random_batch(6), o, SPECIAL, Draw(torch.Generator().manual_seed(0)))
    assert {"mvm_code_loss", "mam_contrastive_loss"} <= set(losses)
    assert not {"mvm_pixel_loss", "mam_regression_loss"} & set(losses)
    losses["loss"].backward()
    assert model.heads["mvm_pixels"].weight.grad is None
    assert model.heads["mam"].weight.grad.abs().sum() > 0  # the contrast still reads the mel head


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
    default = pretext_losses(
        tiny_model(), random_batch(6), objectives(), SPECIAL, Draw(torch.Generator().manual_seed(0))
    )
    assert set(losses) == set(default) - absent


def test_image_text_preset_never_reads_audio():
    batch = random_batch(6)
    batch["mel"] = torch.full_like(batch["mel"], float("nan"))
    losses = pretext_losses(
        tiny_model(), batch, objectives("image_text"), SPECIAL, Draw(torch.Generator().manual_seed(0))
    )
    assert torch.isfinite(losses["loss"])


def test_each_objective_falls_when_a_tiny_batch_is_repeated():
    torch.manual_seed(0)
    model, batch, o = (
        tiny_model(seed=1),
        random_batch(6, seed=2),
        objectives(drop_text=0, drop_image=0, drop_audio=0, matching=1.0),
    )
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


def decoder_contexts(monkeypatch, model, batch, o, seed: int = 3) -> dict:
    """decoder -> (targets, context, context valid) that `pretext_losses` gave it."""
    seen = {}

    def spy(decoder, targets, context, valid, ignore=None):
        seen[decoder] = (targets, context, valid)
        return decoder_loss(decoder, targets, context, valid, ignore)

    monkeypatch.setattr(objectives_module, "decoder_loss", spy)
    pretext_losses(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(seed)))
    return seen


@pytest.mark.parametrize("clean_context", [False, True])
def test_each_decoder_learns_only_where_its_target_is_absent_from_the_context(monkeypatch, clean_context):
    """Changing a decoder's target modality in the inputs changes its targets but not one valid
    position of the context it reads."""
    model, batch, o = tiny_model(), random_batch(16), objectives("hold_out", clean_context=clean_context)
    other_text = torch.where(batch["tokens"] >= 7, 7 + (batch["tokens"] - 6) % 40, batch["tokens"])
    cases = {
        model.text_decoder: {**batch, "tokens": other_text},
        model.image_decoder: {**batch, "image": 1 - batch["image"], "codes": (batch["codes"] + 1) % 16},
    }
    before = decoder_contexts(monkeypatch, model, batch, o)
    for decoder, changed in cases.items():
        targets, context, valid = before[decoder]
        targets_now, context_now, valid_now = decoder_contexts(monkeypatch, model, changed, o)[decoder]
        assert not torch.equal(targets, targets_now)
        assert torch.equal(valid, valid_now) and valid.any(1).all()
        assert torch.allclose(context[valid], context_now[valid], atol=1e-6)
    only_images = decoder_contexts(
        monkeypatch, model, batch, objectives("hold_out", hold_out_text=0.0, hold_out_image=0.5)
    )
    assert (
        model.text_decoder not in only_images and model.image_decoder in only_images
    )  # no text held out: no text loss


def test_sample_level_objectives_see_the_unmasked_inputs(monkeypatch):
    """Contrastive and matching compare whole samples: they get the encodings of the clean batch,
    not those of the pass that masks tokens and patches for the token-level objectives."""
    from opt.model import pretext
    from opt.model.encoders import trim_to_content

    model, batch, seen = tiny_model(), random_batch(6), {}
    real = pretext.sample_level

    def spy(model_, encoded, o, g, *swapped):
        seen.update(encoded)
        return real(model_, encoded, o, g, *swapped)

    monkeypatch.setattr(pretext, "sample_level", spy)  # every row fused: one clean pass of the batch
    o = objectives(text_mask_ratio=0.5, image_mask_ratio=0.5, audio_mask_ratio=0.5, fused_share=1.0)
    pretext_losses(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(0)))
    trimmed = trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
    clean = model.encode(trimmed, tuple(seen))
    masked_batch, masks, _ = pretext.mask_batch(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(0)))
    masked = model.encode(masked_batch, tuple(seen), masks)
    assert set(seen) == {Modality.TEXT, Modality.IMAGE, Modality.AUDIO}
    for m, encoded in seen.items():
        assert torch.allclose(encoded.tokens, clean[m].tokens)
        assert not torch.allclose(encoded.tokens, masked[m].tokens)  # the spy would see a masked pass


def test_a_clean_context_leaves_the_samples_with_a_held_out_modality_unmasked(monkeypatch):
    from opt.model import masking, pretext

    model, batch, seen = tiny_model(), random_batch(16), {}
    real = pretext.mask_batch

    def spy(model_, batch_, o, special, g, rows=None):
        seen["rows"] = rows
        return real(model_, batch_, o, special, g, rows)

    monkeypatch.setattr(pretext, "mask_batch", spy)
    for clean in (False, True):
        o = objectives("hold_out", clean_context=clean, fused_share=1.0)  # setups drawn for all 16
        pretext_losses(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(4)))
        setup, _ = masking.draw_setups(
            16, o.hold_out_text, o.hold_out_image, True, Draw(torch.Generator().manual_seed(4))
        )
        if clean:
            assert torch.equal(seen["rows"], setup == masking.ALL) and not seen["rows"].all()
        else:
            assert seen["rows"] is None  # every sample masked


def test_held_out_setups_refuse_whole_modality_dropping_beside_them():
    o = objectives("hold_out", drop_audio=0.1)
    with pytest.raises(ValueError, match="drop_text/drop_image/drop_audio"):
        pretext_losses(tiny_model(), random_batch(8), o, SPECIAL, Draw(torch.Generator().manual_seed(0)))


def test_hard_negative_matching_fuses_its_share_of_the_batch(monkeypatch):
    from opt.model import pretext

    seen, real = {}, objectives_module.matching_loss

    def spy(model_, fused_cls, cases):
        seen["rows"] = fused_cls.shape[0]
        return real(model_, fused_cls, cases)

    monkeypatch.setattr(objectives_module, "matching_loss", spy)
    o = objectives("hold_out", matching=1.0, matching_share=0.25, matching_hard_negatives=True)
    losses = pretext.pretext_losses(tiny_model(), random_batch(16), o, SPECIAL, Draw(torch.Generator().manual_seed(0)))
    assert seen["rows"] == 4 and torch.isfinite(losses["matching_loss"])


def test_the_contrastive_loss_does_not_depend_on_the_masking_draw():
    model, batch = tiny_model(), random_batch(6)
    o = objectives(mlm=0.0, mvm=0.0, mam=0.0, text_denoise=0.0, image_denoise=0.0, matching=0.0)
    losses = [
        pretext_losses(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(seed)))["contrastive_loss"]
        for seed in (0, 1)
    ]
    assert torch.allclose(losses[0], losses[1])


def test_a_fused_share_fuses_the_first_samples_and_contrasts_the_whole_batch():
    """fused_share 0.5 of 8: every token-level and decoder loss equals the full objective on the
    first 4 samples alone (same draws); contrastive equals the contrastive loss of all 8."""
    model, batch = tiny_model().eval(), random_batch(8)
    first = {k: v[:4] for k, v in batch.items()}
    shared = pretext_losses(model, batch, objectives(fused_share=0.5), SPECIAL, Draw(torch.Generator().manual_seed(3)))
    every_row = objectives(fused_share=1.0)
    alone = pretext_losses(model, first, every_row, SPECIAL, Draw(torch.Generator().manual_seed(3)))
    whole = pretext_losses(model, batch, every_row, SPECIAL, Draw(torch.Generator().manual_seed(3)))
    for name in set(shared) - {"contrastive_loss", "loss"}:
        torch.testing.assert_close(shared[name], alone[name], msg=name)
    torch.testing.assert_close(shared["contrastive_loss"], whole["contrastive_loss"])
    assert not torch.allclose(shared["contrastive_loss"], alone["contrastive_loss"])
    as_rank_0_of_2 = Draw(torch.Generator().manual_seed(3), slice(0, 8), 16)  # data-parallel: draws for its 4 fused
    assert torch.isfinite(pretext_losses(model, batch, objectives(fused_share=0.5), SPECIAL, as_rank_0_of_2)["loss"])
    with pytest.raises(ValueError, match="fused_share=0"):
        pretext_losses(model, batch, objectives(fused_share=0.0), SPECIAL, Draw(torch.Generator().manual_seed(3)))


def test_encoding_by_length_gives_the_one_pass_encodings_of_every_real_token():
    from opt.model.encoders import trim_to_content
    from opt.model.pretext import encode_by_length

    model, batch = tiny_model().eval(), random_batch(10, seed=2)
    modalities = (Modality.TEXT, Modality.IMAGE, Modality.AUDIO)
    one_pass = model.encode(
        trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches), modalities
    )
    chunked = encode_by_length(model, batch, modalities, chunk=3)
    for m in modalities:
        assert torch.equal(chunked[m].valid, one_pass[m].valid), m
        real = one_pass[m].valid
        torch.testing.assert_close(chunked[m].tokens[real], one_pass[m].tokens[real], atol=1e-5, rtol=1e-4)


def test_the_contrastive_peer_encodes_each_sample_once_and_never_fuses(monkeypatch):
    """experiment=contrastive_peer: only contrastive is active, so no masked pass and no fusion run,
    and its loss is the contrastive loss of the clean encodings (one encode call per step)."""
    from opt.model import pretext

    o = load_config(["experiment=contrastive_peer"]).objectives
    assert not pretext.reads_fusion(o) and pretext.reads_fusion(objectives())
    model, batch, calls = tiny_model(), random_batch(6), []
    real_encode = model.encode
    monkeypatch.setattr(model, "fuse", lambda *a, **k: pytest.fail("the peer fused"))
    monkeypatch.setattr(model, "encode", lambda b, m, masks=None: calls.append(masks) or real_encode(b, m, masks))
    losses = pretext_losses(model, batch, o, SPECIAL, Draw(torch.Generator().manual_seed(0)))
    assert set(losses) == {"contrastive_loss", "loss"} and calls == [None]
    clean = pretext.sample_level(model, real_encode(batch, pretext.modalities_of(o)), o, None)
    assert torch.allclose(losses["contrastive_loss"], clean["contrastive_loss"], atol=1e-5)
    shuffled = {**batch, "image": batch["image"].flip(0)}  # pairs broken: a different loss
    assert not torch.allclose(pretext_losses(model, shuffled, o, SPECIAL, None)["loss"], losses["loss"])
