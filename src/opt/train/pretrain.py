"""`opt pretrain`: pre-train OPT on the prepared train split with the configured pretext tasks.

From scratch by default; `trainer.init_from=PATH` starts from saved weights instead.
Needs the prepared data and the VQ codes (`opt image_tokenizer`). Writes checkpoints under
checkpoints/pretrain/, the pre-trained model (opt.artifacts: models/pretrain/), per-step losses to
metrics/pretrain_losses.csv and the summary (with zero-shot retrieval and word grounding,
opt.train.grounding, on the test split) to metrics/pretrain.json.
"""

from __future__ import annotations

import shutil

from torch import nn

from opt.artifacts import (
    codes_file,
    load_tokenizer,
    prepared_dir,
    prepared_identity,
    require,
    save_pretrained,
    training_split,
    vq_identity,
)
from opt.config import path
from opt.data.dataset import read_params
from opt.data.text import CaptionTokenizer
from opt.files import write_metrics
from opt.model.masking import Draw
from opt.model.opt import OPT, Dims
from opt.model.pretext import SpecialTokens, pretext_losses
from opt.train.checkpoint import load_weights
from opt.train.floors import pretrain_report
from opt.train.grounding import swap_test, word_grounding, word_sets
from opt.train.seeding import seed_everything
from opt.train.trainer import Trainer, fingerprint
from opt.train.zero_shot import zero_shot_retrieval


class PretrainObjective(nn.Module):
    """forward(batch, draw) -> every active pretext loss and `loss`."""

    def __init__(self, model: OPT, objectives, special: SpecialTokens):
        super().__init__()
        self.model, self.objectives, self.special = model, objectives, special

    def forward(self, batch: dict, draw: Draw) -> dict:
        return pretext_losses(self.model, batch, self.objectives, self.special, draw)


def model_dims(cfg) -> Dims:
    params = read_params(prepared_dir(cfg))
    tokenizer = load_tokenizer(cfg)
    return Dims(
        tokenizer.vocab_size, params["image"]["size"], params["mel"]["n_mels"], cfg.image_tokenizer.codebook_size
    )


def build_model(cfg) -> OPT:
    """A fresh OPT with weights drawn from `trainer.seed` (or loaded from `trainer.init_from`)."""
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    model = OPT(cfg.model, model_dims(cfg))
    if cfg.trainer.init_from:
        model.load_state_dict(load_weights(cfg.trainer.init_from))
    return model


def special_tokens(tokenizer: CaptionTokenizer, swap_groups: tuple = ()) -> SpecialTokens:
    """The ids the pretext tasks treat specially, as the run's tokenizer assigns them."""
    return SpecialTokens(
        pad=tokenizer.pad_id, mask=tokenizer.mask_id, count=tokenizer.special_count, swap_groups=swap_groups
    )


def swap_groups(names, records: list[dict], tokenizer: CaptionTokenizer) -> tuple:
    """The id sets (G_k,) of `objectives.swap_negatives` (shape: singular and plural shape words, colour),
    from the scene vocabulary of `records` (opt.train.grounding.word_sets)."""
    if unknown := [n for n in names if n not in ("shape", "colour")]:
        raise ValueError(f"objectives.swap_negatives: unknown word groups {unknown}; expected shape, colour")
    sets = word_sets(records, tokenizer) if names else {}
    return tuple(ids for name in names for ids in sets.get(name, []))


def pretrain(cfg, stop_at: int | None = None) -> dict:
    if cfg.trainer.length_buckets and cfg.objectives.fused_share < 1:
        raise ValueError(
            "trainer.length_buckets sorts each batch by clip length, so objectives.fused_share < 1 would fuse "
            "only its shortest samples: set one of them off"
        )
    require(codes_file(cfg, "train"), "VQ codes (MVM targets, image decoder)", "opt image_tokenizer")
    model = build_model(cfg)
    tokenizer = load_tokenizer(cfg)
    special = special_tokens(
        tokenizer, swap_groups(list(cfg.objectives.swap_negatives), training_split(cfg, "train").records(), tokenizer)
    )
    run_dir = path(cfg, "checkpoints") / "pretrain"
    trainer = Trainer(
        PretrainObjective(model, cfg.objectives, special),
        training_split(cfg, "train"),
        cfg.trainer,
        run_dir,
        fingerprint=fingerprint(
            cfg,
            ("model", "objectives", "image_tokenizer", "prepare", "data"),
            cfg.trainer,
            {**prepared_identity(cfg), "image_tokenizer": vq_identity(cfg)},
        ),
    )
    result = trainer.fit(stop_at=stop_at)
    if not trainer.world.main or trainer.step < cfg.trainer.max_steps:
        return result
    save_pretrained(cfg, model)
    test = training_split(cfg, "test")
    result["zero_shot"] = zero_shot_retrieval(model, test, trainer.device)
    result["grounding"] = word_grounding(model, test, tokenizer, trainer.device, bool(cfg.objectives.use_audio))
    result["swap_test"] = swap_test(model, test, tokenizer, trainer.device)
    write_metrics(cfg, "pretrain", result)
    if (run_dir / "losses.csv").exists():  # absent after 0 steps (the no-pre-training baseline)
        shutil.copy(run_dir / "losses.csv", path(cfg, "metrics") / "pretrain_losses.csv")
        flat = [
            r["loss"]
            for r in pretrain_report(cfg, run_dir / "losses.csv", special.count, special.pad)
            if not r["learned"]
        ]
        print(f"pretrain: losses at their floor (reports/pretrain.md): {', '.join(flat) or 'none'}")
    print(
        f"pretrain: {result['step']} steps, final loss {result['final'].get('loss', float('nan')):.3f}, "
        f"zero-shot text->image R@1 {result['zero_shot']['text_to_image']['R@1']:.3f}"
    )
    for group, acc in result["grounding"].items():
        scores = ", ".join(f"{c} {v:.3f}" for c, v in acc.items() if c != "words" and v is not None)
        print(f"pretrain: masked {group} words picked with {scores} (opt.train.grounding)")
    for group, share in result["swap_test"].items():
        if share is not None:
            print(
                f"pretrain: test images closer to their caption than with a {group} swapped: {share:.3f} (chance 0.5)"
            )
    return result
