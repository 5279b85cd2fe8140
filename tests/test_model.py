"""The OPT model: shapes for every subset of modalities, padding, decoders and KV cache."""

from itertools import combinations, product

import pytest
import torch
from model_fixtures import DIMS, random_batch, tiny_model, tiny_model_config

from opt.model.decoders import Decoder
from opt.model.encoders import Modality, patchify, unpatchify

SUBSETS = [s for n in (1, 2, 3) for s in combinations(list(Modality), n)]


@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(m.value for m in s))
def test_fused_shapes_for_every_subset_of_modalities(subset):
    model, batch = tiny_model(), random_batch(4)
    fused = model(batch, subset)
    lengths = {Modality.TEXT: 1 + 12, Modality.IMAGE: 1 + (32 // 8) ** 2, Modality.AUDIO: 1 + 8}
    assert fused.tokens.shape == (4, 1 + sum(lengths[m] for m in subset), model.cfg.dim)
    assert set(fused.spans) == set(subset)
    assert torch.isfinite(fused.tokens).all()
    for m in subset:
        assert fused.spans[m].stop - fused.spans[m].start == lengths[m]


def test_padding_does_not_change_real_tokens():
    """Text padding tokens and audio frames past the end must not leak into the fusion."""
    model, batch = tiny_model().eval(), random_batch(3)
    garbage = dict(batch)
    garbage["tokens"] = torch.where(batch["tokens"] == 0, torch.full_like(batch["tokens"], 9), batch["tokens"])
    mel = batch["mel"].clone()
    frames_end = ((batch["mel_frames"] + 15) // 16) * 16
    for i, end in enumerate(frames_end):
        mel[i, :, end:] = 100.0
    garbage["mel"] = mel
    a, b = model(batch), model(garbage)
    assert torch.allclose(a.tokens[a.valid], b.tokens[b.valid], atol=1e-5)


def test_absent_modality_is_ignored_by_the_fusion():
    model, batch = tiny_model().eval(), random_batch(3)
    encoded = model.encode(batch)
    present = {
        Modality.TEXT: torch.ones(3, dtype=torch.bool),
        Modality.IMAGE: torch.ones(3, dtype=torch.bool),
        Modality.AUDIO: torch.zeros(3, dtype=torch.bool),
    }
    with_audio_masked = model.fuse(encoded, present)
    without_audio = model.fuse({m: e for m, e in encoded.items() if m is not Modality.AUDIO})
    n = without_audio.tokens.shape[1]
    assert torch.allclose(with_audio_masked.tokens[:, :n], without_audio.tokens, atol=1e-5)


def test_patchify_round_trip():
    images = torch.rand(2, 3, 32, 32)
    patches = patchify(images, 8)
    assert patches.shape == (2, 16, 3 * 64)
    assert torch.equal(unpatchify(patches, 8, 32), images)
    assert torch.equal(patches[0, 1].reshape(3, 8, 8), images[0, :, 0:8, 8:16])  # row-major grid


@pytest.mark.parametrize(
    "decoder_name,vocab", [("text_decoder", DIMS.vocab_size), ("image_decoder", DIMS.codebook_size)]
)
def test_generation_with_kv_cache_equals_generation_without(decoder_name, vocab):
    model = tiny_model(seed=3, text_decoder_layers=2, image_decoder_layers=2).eval()
    fused = model(random_batch(3, seed=1))
    decoder = getattr(model, decoder_name)
    cached = decoder.generate(fused.tokens, fused.valid, use_cache=True)
    plain = decoder.generate(fused.tokens, fused.valid, use_cache=False)
    assert cached.shape == (3, decoder.length)
    assert torch.equal(cached, plain)
    assert cached.max() < vocab
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    sampled_cached = decoder.generate(fused.tokens, fused.valid, use_cache=True, temperature=1.0, generator=g1)
    sampled_plain = decoder.generate(fused.tokens, fused.valid, use_cache=False, temperature=1.0, generator=g2)
    assert torch.equal(sampled_cached, sampled_plain)


def test_guided_generation_mixes_conditional_and_null_logits():
    """Guidance 1 is plain conditional decoding; guided decoding equals a step-by-step reference
    that mixes the logits of the two contexts, with and without the KV cache; top-1 sampling is greedy."""
    model = tiny_model(seed=3, image_decoder_layers=2).eval()
    fused = model(random_batch(3, seed=1))
    hidden = {m: torch.zeros(3, dtype=torch.bool) for m in Modality}
    null = model.fuse(model.encode(random_batch(3, seed=1)), hidden)
    decoder = model.image_decoder
    plain = decoder.generate(fused.tokens, fused.valid)
    assert torch.equal(decoder.generate(fused.tokens, fused.valid, null_context=(null.tokens, null.valid)), plain)
    assert torch.equal(decoder.generate(fused.tokens, fused.valid, temperature=1.0, top_k=1), plain)
    scale, steps = 3.0, 6
    guided = [
        decoder.generate(
            fused.tokens,
            fused.valid,
            steps=steps,
            use_cache=cache,
            null_context=(null.tokens, null.valid),
            guidance=scale,
        )
        for cache in (True, False)
    ]
    assert torch.equal(guided[0], guided[1])
    prefix = torch.zeros(3, 0, dtype=torch.long)
    for _ in range(steps):  # reference: teacher forcing on the prefix, next symbol from mixed logits
        probe = torch.cat([prefix, torch.zeros(3, 1, dtype=torch.long)], dim=1)
        cond = decoder(probe, fused.tokens, fused.valid)[:, -1]
        free = decoder(probe, null.tokens, null.valid)[:, -1]
        prefix = torch.cat([prefix, (free + scale * (cond - free)).argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(guided[0], prefix)
    assert not torch.equal(guided[0], plain[:, :steps])  # the null half changed something


def test_per_row_generators_make_each_rows_draws_its_own():
    """With one generator per row, a row's sampled symbols depend on its seed only, not on the
    other rows of the batch; one generator for the batch draws differently."""
    model = tiny_model(seed=3, image_decoder_layers=2).eval()
    fused = model(random_batch(3, seed=1))
    decoder = model.image_decoder

    def draw(rows, seeds):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return decoder.generate(fused.tokens[rows], fused.valid[rows], steps=8, temperature=1.0, generator=generators)

    together = draw([0, 1, 2], [7, 8, 9])
    alone = torch.cat([draw([r], [s]) for r, s in zip([0, 1, 2], [7, 8, 9])])
    assert torch.equal(together, alone)
    assert torch.equal(draw([2, 0], [9, 7]), together[[2, 0]])
    assert not torch.equal(draw([0, 1, 2], [1, 2, 3]), together)


def test_teacher_forcing_is_causal():
    """Logits at position t must not depend on targets at positions >= t."""
    model = tiny_model().eval()
    fused = model(random_batch(2))
    codes = torch.randint(0, DIMS.codebook_size, (2, 16))
    changed = codes.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % DIMS.codebook_size
    a = model.image_decoder(codes, fused.tokens, fused.valid)
    b = model.image_decoder(changed, fused.tokens, fused.valid)
    assert torch.allclose(a[:, :11], b[:, :11], atol=1e-5)
    assert not torch.allclose(a[:, 11:], b[:, 11:], atol=1e-5)


def test_trimming_shared_padding_changes_no_real_token():
    from opt.model.encoders import trim_to_content

    model, batch = tiny_model().eval(), random_batch(3)
    batch["token_count"] = torch.tensor([5, 7, 6])
    batch["mel_frames"] = torch.tensor([30, 50, 40])
    trimmed = trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
    assert trimmed["tokens"].shape[1] == 7 and trimmed["mel"].shape[2] == 64  # 4 patches of 16 frames
    full, short = model(batch), model(trimmed)
    for m in short.spans:
        a = full.tokens[:, full.spans[m]][full.valid[:, full.spans[m]]]
        b = short.tokens[:, short.spans[m]][short.valid[:, short.spans[m]]]
        assert torch.allclose(a, b, atol=1e-5)


class TableDecoder(Decoder):
    """A hand-built decoder over symbols a=0, b=1, end=2: next-symbol probabilities by prefix."""

    TABLE = {(): (0.6, 0.4, 1e-6), (0,): (0.34, 0.33, 0.33), (1,): (0.005, 0.005, 0.99)}
    LONGER = (0.05, 0.05, 0.9)

    def next_logits(self, prefix, context, context_mask, cache):
        rows = [self.TABLE.get(tuple(p[1:]), self.LONGER) for p in prefix.tolist()]  # BOS first
        return torch.tensor(rows).log()


def table_decoder() -> TableDecoder:
    return TableDecoder(tiny_model_config(), vocab=3, length=3, layers=1)


def best_by_brute_force(decoder: TableDecoder, steps: int, alpha: float) -> list[int]:
    """Every sequence of `steps` symbols cut after its first end, ranked as beam search ranks."""
    best, best_score = None, float("-inf")
    for seq in product(range(3), repeat=steps):
        cut = list(seq[: seq.index(2) + 1]) if 2 in seq else list(seq)
        logp = sum(
            torch.tensor(decoder.TABLE.get(tuple(cut[:i]), decoder.LONGER)[s]).log().item() for i, s in enumerate(cut)
        )
        if logp / len(cut) ** alpha > best_score:
            best, best_score = cut, logp / len(cut) ** alpha
    return best


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_returns_the_highest_scoring_sequence(alpha):
    decoder, context, valid = table_decoder(), torch.zeros(1, 1, 64), torch.ones(1, 1, dtype=torch.bool)
    greedy = decoder.beam_search(context, valid, steps=3, width=1, end=2, length_penalty=alpha)
    assert greedy.tolist() == [[0, 0, 2]]  # greedy takes a (0.6) and ends far below b, end (0.4 x 0.99)
    exhaustive = decoder.beam_search(context, valid, steps=3, width=27, end=2, length_penalty=alpha)
    expected = best_by_brute_force(decoder, 3, alpha)
    assert expected == [1, 2]
    assert exhaustive[0, : len(expected)].tolist() == expected and (exhaustive[0, len(expected) :] == 2).all()
    assert decoder.beam_search(context, valid, steps=3, width=2, end=2, length_penalty=alpha).tolist() == [[1, 2, 2]]


def test_beam_search_of_width_one_is_greedy_decoding():
    model = tiny_model(seed=3, text_decoder_layers=2).eval()
    fused = model(random_batch(4, seed=1))
    greedy = model.text_decoder.generate(fused.tokens, fused.valid)
    end = int(greedy[0, 2])  # an end symbol that row 0 emits, so rows stop at different places
    beam = model.text_decoder.beam_search(fused.tokens, fused.valid, model.text_decoder.length, 1, end)
    for g, b in zip(greedy.tolist(), beam.tolist(), strict=True):
        stop = g.index(end) + 1 if end in g else len(g)
        assert b[:stop] == g[:stop] and all(s == end for s in b[stop:])


@pytest.mark.parametrize("pool", ["cls", "max"])
def test_image_summary_is_its_cls_or_the_max_over_its_patches(pool):
    model, batch = tiny_model(image_pool=pool).eval(), random_batch(3)
    encoded = model.encode(batch, (Modality.IMAGE, Modality.TEXT))
    image = encoded[Modality.IMAGE].tokens  # (B, 1+N, D)
    expected = image[:, 0] if pool == "cls" else image[:, 1:].max(dim=1).values
    assert torch.equal(model.summary(encoded[Modality.IMAGE], Modality.IMAGE), expected)
    assert not torch.equal(expected, image[:, 0] if pool == "max" else image[:, 1:].max(dim=1).values)
    assert torch.equal(model.summary(encoded[Modality.TEXT], Modality.TEXT), encoded[Modality.TEXT].tokens[:, 0])


def test_an_unknown_image_pool_is_refused_by_name():
    with pytest.raises(ValueError, match="image_pool='mean'"):
        tiny_model(image_pool="mean")


def test_conv_stem_tokens_never_see_the_pixels_of_masked_patches():
    """The conv stem's 3x3 windows reach into neighbouring patches; masked patches are blanked
    before it, so repainting one changes no token, while repainting a visible patch changes its
    neighbours' tokens too (the leak the blanking prevents)."""
    model, batch = tiny_model(image_stem="conv").eval(), random_batch(2)
    encoder, grid = model.encoders[Modality.IMAGE], 32 // 8
    masked = torch.zeros(2, grid * grid, dtype=torch.bool)
    masked[:, 5] = True  # row 1, column 1: pixels 8..15 x 8..15
    repainted = batch["image"].clone()
    repainted[:, :, 8:16, 8:16] = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        same = encoder(batch["image"], masked), encoder(repainted, masked)
        stem = [encoder.conv(x * 2 - 1).flatten(2).transpose(1, 2) for x in (batch["image"], repainted)]  # (B,N,D)
    assert same[0].tokens.shape == (2, 1 + grid * grid, model.cfg.dim)
    assert torch.equal(same[0].tokens, same[1].tokens)
    assert not torch.allclose(stem[0][:, 6], stem[1][:, 6])  # unblanked, the neighbour token moves


def test_an_unknown_image_stem_is_refused_by_name():
    with pytest.raises(ValueError, match="image_stem='resnet'"):
        tiny_model(image_stem="resnet")


def test_the_vq_tokenizer_trains_under_bf16_autocast_with_an_fp32_codebook():
    """The trainer's bf16 autocast reaches the VQ-VAE: its convolutions may run in bf16, but the
    nearest-code search and the EMA (incl. restarting dead codes) stay fp32, and codes match fp32's."""
    from opt.model.vq import VQVAE

    torch.manual_seed(0)
    vq, images = VQVAE(16, 4, 32, 8, 16, decay=0.5), torch.rand(8, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(images)  # the first call initialises the codebook; dead codes restart in update
    out["loss"].backward()
    assert vq.codebook.codebook.dtype == torch.float32 and torch.isfinite(vq.codebook.codebook).all()
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    vq.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_codes = vq.encode_codes(images)
    assert (bf16_codes == vq.encode_codes(images)).float().mean() > 0.8
