"""Masking functions mask what they say; matching labels match OPT's five cases."""

import pytest
import torch

from opt.model.masking import (
    ALL,
    IGNORE,
    IMAGE_HELD_OUT,
    TEXT_HELD_OUT,
    Draw,
    draw_setups,
    drop_modalities,
    mask_patches,
    mask_text,
    matching_cases,
    swap_words,
)


def draw(seed=0):
    return Draw(torch.Generator().manual_seed(seed))


def test_patch_mask_hides_the_ratio_of_real_patches_only():
    valid = torch.ones(50, 40, dtype=torch.bool)
    valid[:, 30:] = False  # padding
    masked = mask_patches(valid, 0.25, draw())
    assert (masked.sum(1) == round(30 * 0.25)).all()
    assert not masked[:, 30:].any()
    assert masked.float().mean(0)[:30].min() > 0  # every real position gets masked sometimes


def test_patch_mask_masks_at_least_one():
    valid = torch.zeros(4, 10, dtype=torch.bool)
    valid[:, :2] = True
    assert (mask_patches(valid, 0.1, draw()).sum(1) == 1).all()


def test_text_masking_is_bert_80_10_10_on_real_non_special_tokens():
    b, length, vocab, special = 400, 30, 100, 7
    tokens = torch.randint(special, vocab, (b, length))
    tokens[:, 0] = 2  # [CLS]
    count = torch.full((b,), 25)
    tokens[:, 25:] = 0
    inputs, labels = mask_text(tokens, count, 0.15, 4, vocab, special, draw())
    chosen = labels != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, 25:].any()
    assert torch.equal(labels[chosen], tokens[chosen])
    assert (chosen.sum(1) == round(24 * 0.15)).all()
    as_mask = (inputs[chosen] == 4).float().mean()
    unchanged = (inputs[chosen] == tokens[chosen]).float().mean()
    assert 0.75 < as_mask < 0.85 and 0.06 < unchanged < 0.14
    assert torch.equal(inputs[~chosen], tokens[~chosen])
    assert (inputs[chosen] >= special).logical_or(inputs[chosen] == 4).all()


def test_modality_dropping_follows_probabilities_and_never_drops_everything():
    present = drop_modalities(5000, {"text": 0.5, "image": 0.2, "audio": 0.0}, draw())
    stacked = torch.stack(list(present.values()), 1)
    assert stacked.any(1).all()
    assert present["audio"].all()
    assert 0.45 < 1 - present["text"].float().mean() < 0.55
    everything_dropped = drop_modalities(100, {"text": 1.0, "image": 1.0}, draw())
    assert (torch.stack(list(everything_dropped.values()), 1).sum(1) == 1).all()


def test_setups_hold_out_the_decoder_targets_in_their_shares():
    setup, present = draw_setups(6000, 0.3, 0.2, True, draw())
    text, image, audio = present["text"], present["image"], present["audio"]
    assert 0.27 < (setup == TEXT_HELD_OUT).float().mean() < 0.33
    assert 0.17 < (setup == IMAGE_HELD_OUT).float().mean() < 0.23
    assert (text & image & audio)[setup == ALL].all()
    held_text, held_image = setup == TEXT_HELD_OUT, setup == IMAGE_HELD_OUT
    assert not text[held_text].any() and (image | audio)[held_text].all()
    assert not image[held_image].any() and text[held_image].all()
    for context in (image & audio, image & ~audio, ~image & audio):  # every captioning/ASR context occurs
        assert 0.25 < context[held_text].float().mean() < 0.42
    assert 0.4 < audio[held_image].float().mean() < 0.6
    _, two = draw_setups(1000, 0.5, 0.5, False, draw())
    assert set(two) == {"text", "image"} and (two["text"] ^ two["image"]).all()
    with pytest.raises(ValueError, match="at most 1"):
        draw_setups(10, 0.6, 0.5, True, draw())


@pytest.mark.parametrize("b", [3, 4, 16])
def test_matching_sources_match_the_five_cases(b):
    for seed in range(20):
        case, image_src, audio_src = matching_cases(b, draw(seed))
        own = torch.arange(b)
        image_own, audio_own = image_src == own, audio_src == own
        assert ((case == 0) == (image_own & audio_own)).all()
        assert ((case == 1) == (~image_own & audio_own)).all()
        assert ((case == 2) == (image_own & ~audio_own)).all()
        assert ((case == 3) == (~image_own & ~audio_own & (image_src == audio_src))).all()
        assert ((case == 4) == (~image_own & ~audio_own & (image_src != audio_src))).all()


def test_matching_draws_every_case():
    case, _, _ = matching_cases(1000, draw())
    assert set(case.tolist()) == {0, 1, 2, 3, 4}
    assert set(matching_cases(1000, draw(), cases=2)[0].tolist()) == {0, 1}


def test_hard_negatives_follow_the_weights_and_never_pick_the_sample_itself():
    weights = torch.zeros(4, 10)
    weights[:, 7] = 1.0  # every anchor's most similar other sample is 7 ...
    weights[torch.arange(4), torch.arange(4)] = 5.0  # ... after itself, which must never be drawn
    weights[3, 7], weights[3, 8] = 0.0, 1.0  # anchor 3: sample 8
    for seed in range(10):
        case, image_src, audio_src = matching_cases(4, draw(seed), image_weights=weights, audio_weights=weights)
        swapped = (case == 1) | (case == 3) | (case == 4)
        expected = torch.tensor([7, 7, 7, 8])
        assert torch.equal(image_src[swapped], expected[swapped])
        own = torch.arange(4)
        assert torch.equal(image_src[~swapped], own[~swapped])
        assert ((audio_src != image_src) | (case != 4)).all()


def test_sliced_draw_gives_each_process_its_rows_of_the_global_draw():
    valid = torch.ones(8, 20, dtype=torch.bool)
    whole = mask_patches(valid, 0.3, draw(7))
    halves = [
        mask_patches(valid[:4], 0.3, Draw(torch.Generator().manual_seed(7), slice(r * 4, r * 4 + 4), 8))
        for r in range(2)
    ]
    assert torch.equal(torch.cat(halves), whole)


def test_the_draw_of_each_process_first_rows_is_its_part_of_the_global_draw_of_those_rows():
    """fused_share < 1 under data parallelism: each process masks the first 2 of its 4 rows; together
    they draw as one process masking the 4 fused rows (and no process asks for 4 rows of scores)."""
    valid = torch.ones(4, 20, dtype=torch.bool)
    whole = mask_patches(valid, 0.3, draw(7))
    parts = [
        mask_patches(valid[:2], 0.3, Draw(torch.Generator().manual_seed(7), slice(r * 4, r * 4 + 4), 8).first(2))
        for r in range(2)
    ]
    assert torch.equal(torch.cat(parts), whole)
    single = draw(7)
    assert single.first(2) is single


def test_swap_words_swaps_one_real_word_per_caption_for_another_of_its_group():
    groups = [torch.tensor([10, 11, 12]), torch.tensor([20, 21])]
    tokens = torch.tensor(
        [
            [2, 10, 5, 20, 3, 0],  # two swappable words
            [2, 5, 6, 3, 0, 0],  # none
            [2, 12, 3, 0, 0, 11],  # a group id in the padding must stay
        ]
    )
    count = torch.tensor([5, 4, 3])
    member = {i: k for k, g in enumerate(groups) for i in g.tolist()}
    seen = set()
    for seed in range(40):
        swapped, has = swap_words(tokens, count, groups, draw(seed))
        assert has.tolist() == [True, False, True]
        assert torch.equal(swapped[1], tokens[1]) and swapped[2, 5] == 11
        for row in (0, 2):
            changed = (swapped[row] != tokens[row]).nonzero()[:, 0].tolist()
            assert len(changed) == 1
            old, new = int(tokens[row, changed[0]]), int(swapped[row, changed[0]])
            assert member[old] == member[new] and old != new
            seen.add((row, changed[0], new))
    assert {(0, 1), (0, 3)} <= {(r, p) for r, p, _ in seen}  # either word of row 0 gets swapped
    assert {n for r, p, n in seen if (r, p) == (0, 1)} == {11, 12}  # to every other member
