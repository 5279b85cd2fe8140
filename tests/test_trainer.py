"""The trainer: exact resume, DDP equivalence, atomic safetensors checkpoints, loss logs."""

import csv

import pytest
import torch
import torch.multiprocessing as mp
from trainer_fixtures import (
    ddp_worker,
    decomposable_objectives,
    gradients,
    in_memory_dataset,
    objective,
    trainer_config,
)

from opt.servers import free_port
from opt.train import checkpoint as ckpt
from opt.train import distributed
from opt.train.schedule import lr_factor
from opt.train.trainer import Trainer, build_optimizer


def weights(trainer):
    return {k: v.clone() for k, v in trainer.objective.model.state_dict().items()}


def assert_same_weights(a, b, exact=True):
    assert a.keys() == b.keys()
    for k in a:
        same = torch.equal(a[k], b[k]) if exact else torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5)
        assert same, f"{k} differs"


def test_a_run_killed_midway_and_resumed_ends_with_the_same_weights(tmp_path):
    tcfg = trainer_config(max_steps=6, checkpoint_every=3)
    whole = Trainer(objective(seed=0), in_memory_dataset(), tcfg, tmp_path / "whole")
    whole.fit()
    killed = Trainer(objective(seed=0), in_memory_dataset(), tcfg, tmp_path / "resumed")
    killed.fit(stop_at=4)  # dies after step 4; the last checkpoint is step 3
    resumed = Trainer(objective(seed=99), in_memory_dataset(), tcfg, tmp_path / "resumed")
    assert resumed.fit()["step"] == 6
    assert_same_weights(weights(whole), weights(resumed))
    with open(tmp_path / "resumed" / "losses.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == [1, 2, 3, 4, 5, 6]  # the repeated step 4 is logged once


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    tcfg = trainer_config(max_steps=3, checkpoint_every=3)
    Trainer(objective(), in_memory_dataset(), tcfg, tmp_path, fingerprint="a").fit()
    other = Trainer(objective(), in_memory_dataset(), tcfg, tmp_path, fingerprint="b")
    with pytest.warns(UserWarning, match="another configuration"):
        assert not other.resume()
    assert other.step == 0


def test_two_process_gloo_ddp_gives_the_same_update_as_one_process(tmp_path):
    """Same global batch, same masks: the all-reduced gradient equals the one-process gradient
    (compared before AdamW, whose first step is sign(g) * lr and so amplifies float noise)."""
    single = Trainer(
        objective(decomposable_objectives()), in_memory_dataset(), trainer_config(batch_size=6), tmp_path / "single"
    )
    single.accumulate_gradients()
    out = tmp_path / "ddp.pt"
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path / "ddp"), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    one = gradients(single)
    assert any(g.abs().sum() > 0 for g in one.values())
    assert_same_weights(one, ddp, exact=False)


def test_checkpoints_are_safetensors_written_atomically_and_pruned(tmp_path):
    tcfg = trainer_config(max_steps=6, checkpoint_every=2)
    Trainer(objective(), in_memory_dataset(), tcfg, tmp_path).fit()
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step-000004", "step-000006"]  # the newest two are kept
    assert not list(tmp_path.glob("*.tmp"))
    latest = ckpt.latest_checkpoint(tmp_path)
    assert (latest / "model.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    weights_only = ckpt.load_weights(latest)
    assert all(torch.is_tensor(v) for v in weights_only.values())


def test_half_written_checkpoint_is_ignored(tmp_path):
    tcfg = trainer_config(max_steps=3, checkpoint_every=3)
    Trainer(objective(), in_memory_dataset(), tcfg, tmp_path).fit()
    (tmp_path / "step-000009.tmp").mkdir()  # a crash while writing step 9
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000003"


def test_warmup_then_cosine_schedule():
    factors = [lr_factor(s, 10, 110, 0.1) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)


def test_bf16_autocast_step_runs_and_keeps_fp32_weights(tmp_path):
    trainer = Trainer(objective(), in_memory_dataset(), trainer_config(max_steps=2, precision="bf16"), tmp_path)
    result = trainer.fit()
    assert result["step"] == 2 and torch.isfinite(torch.tensor(result["final"]["loss"]))
    assert all(p.dtype == torch.float32 for p in trainer.objective.parameters())


@pytest.mark.parametrize("native, chosen", [(False, "fp32"), (True, "bf16")])
def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(tmp_path, monkeypatch, native, chosen):
    monkeypatch.setattr(distributed, "native_bf16", lambda device: native)
    trainer = Trainer(objective(), in_memory_dataset(), trainer_config(max_steps=1, precision="auto"), tmp_path)
    with trainer.autocast():
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[chosen]
    assert trainer.fit()["precision"] == chosen  # recorded in metrics/pretrain.json and finetune_*.json


def test_bf16_without_native_support_warns_and_an_unknown_precision_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "native_bf16", lambda device: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert distributed.pick_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        distributed.pick_precision("fp16", torch.device("cpu"))


@pytest.mark.parametrize(
    "capabilities, native",
    [({"avx2": True, "avx512_bf16": False}, False), ({"avx512_bf16": True}, True), ({"amx_bf16": True}, True)],
)
def test_native_bf16_on_x86_reads_the_cpu_capabilities(monkeypatch, capabilities, native):
    monkeypatch.setattr(distributed.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert distributed.native_bf16(torch.device("cpu")) is native


def test_fresh_heads_learn_at_their_factor_of_the_learning_rate():
    """AdamW's first step moves every weight by about lr: the head by factor x the body's."""

    class WithHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)

        def head_parameters(self):
            return self.head.parameters()

    torch.manual_seed(0)
    model = WithHead()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, head_lr_factor=10.0)
    model.head(model.body(torch.randn(8, 4))).square().mean().backward()
    optimizer.step()
    moved = {k: (v - before[k]).abs().max().item() for k, v in model.state_dict().items()}
    assert moved["body.weight"] == pytest.approx(1e-3, rel=0.05)
    assert moved["head.weight"] == pytest.approx(1e-2, rel=0.05)
    assert moved["head.bias"] == pytest.approx(1e-2, rel=0.05)
    plain = build_optimizer(torch.nn.Linear(4, 4), lr=1e-3, weight_decay=0.05)  # no heads: two groups
    assert [g["weight_decay"] for g in plain.param_groups] == [0.05, 0.0]
