"""Retrieval, classification and VQA on the tiny pre-trained model: fine-tune through the
stage, evaluate, learn a repeated batch, the fused text+audio query, and true VQA answers."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from opt.artifacts import load_pretrained
from opt.config import load_config
from opt.data.questions import QUESTION_TYPES, item_questions, scene_vocab
from opt.data.splits import batches
from opt.model.encoders import Modality
from opt.model.masking import Draw
from opt.stages import run_stage
from opt.tasks import get_task
from opt.tasks.base import TaskContext, TaskObjective
from opt.tasks.retrieval import PROMPT, PROMPT_FUSED, fused_query, prepare
from opt.tasks.run import load_task_model, task_steps

UNDERSTANDING = ("retrieval", "classification", "vqa")


def context_of(pretrained_synth, **task_fields) -> TaskContext:
    """The fixture's config with `task_fields` set as overrides (e.g. rerank_k=3)."""
    return TaskContext(load_config(pretrained_synth[1] + [f"task.{k}={v}" for k, v in task_fields.items()]))


def first_batch(context, n: int = 8) -> dict:
    return next(iter(batches(context.split("train"), n)))


def check_metrics(name: str, metrics: dict) -> None:
    if name == "retrieval":
        directions = {
            "text_to_image",
            "image_to_text",
            "audio_to_image",
            "image_to_audio",
            "text_to_audio",
            "audio_to_text",
            "text_audio_to_image",
            "prompt_to_image",
            "prompt_audio_to_image",
        }
        assert set(metrics) == {f"{d}/R@{k}" for d in directions for k in (1, 5, 10)}
    elif name == "classification":
        assert set(metrics) == {"mAP"}
    else:
        assert "accuracy" in metrics and {k.split("/")[1] for k in metrics if "/" in k} <= set(QUESTION_TYPES)
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics


@pytest.mark.parametrize("name", UNDERSTANDING)
def test_finetune_stage_then_evaluate(pretrained_synth, name):
    root, overrides = pretrained_synth
    result = run_stage("finetune", overrides + [f"task={name}", "task.steps=3"])
    cfg = load_config(overrides + [f"task={name}", "task.steps=3"])
    assert result["step"] == task_steps(cfg.task) == 3 * int(cfg.task.step_factors.get(name, 1))
    check_metrics(name, result["val"])
    assert (root / "models" / "finetune" / name / "model.safetensors").exists()
    context = context_of(pretrained_synth)
    task = get_task(name)
    task_model = load_task_model(context.cfg, task, context)
    check_metrics(name, task.evaluate(task_model.opt, task_model.heads, "test", context))


@pytest.mark.parametrize("name", UNDERSTANDING)
def test_finetuning_lowers_the_task_loss_on_a_repeated_batch(pretrained_synth, name):
    torch.manual_seed(0)
    context = context_of(pretrained_synth)
    task = get_task(name).fitted(context)
    model = load_pretrained(context.cfg)
    objective = TaskObjective(task, model, task.heads(model, context), context).train()
    optimizer = torch.optim.Adam(objective.parameters(), lr=1e-3)
    batch, draw = first_batch(context), Draw(torch.Generator().manual_seed(0))
    losses = []
    for _ in range(8):
        loss = objective(batch, draw)[f"{name}_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_text_audio_query_starts_as_text_and_goes_through_the_cross_modal_encoder(pretrained_synth):
    context = context_of(pretrained_synth)
    task = get_task("retrieval").fitted(context)
    model = load_pretrained(context.cfg).eval()
    heads = task.heads(model, context).eval()
    batch = prepare(model, first_batch(context, 4), context.device)
    with torch.no_grad():
        encoded = model.encode(batch)
        text_query = model.embed(encoded[Modality.TEXT], Modality.TEXT)
        assert torch.allclose(fused_query(model, heads, encoded), text_query, atol=1e-6)  # starts as text alone
        torch.nn.init.normal_(heads["query"].weight, std=0.05)  # as fine-tuning moves it
        query = fused_query(model, heads, encoded)
        mean = F.normalize(
            model.embed(encoded[Modality.TEXT], Modality.TEXT) + model.embed(encoded[Modality.AUDIO], Modality.AUDIO),
            dim=-1,
        )
        rolled = {**batch, "mel": batch["mel"].roll(1, 0), "mel_frames": batch["mel_frames"].roll(1, 0)}
        other_audio = model.encode(rolled, (Modality.AUDIO,))
        changed = fused_query(model, heads, {**encoded, Modality.AUDIO: other_audio[Modality.AUDIO]})
    assert query.shape == mean.shape
    assert not torch.allclose(query, mean, atol=1e-3)
    assert (query - changed).norm(dim=-1).min() > 1e-4  # every query depends on its audio


def test_prompt_queries_where_records_have_prompts_and_none_without(pretrained_synth):
    """Synth records give each scene a prompt: prompt -> image and prompt+audio -> image are
    reported beside their chance, the prompt+audio query starts as the prompt alone and differs
    from the caption's; records without ground truth (real narrations) report neither."""
    context = context_of(pretrained_synth)
    task = get_task("retrieval").fitted(context)
    model = load_pretrained(context.cfg).eval()
    heads = task.heads(model, context).eval()
    emb = task.split_embeddings(
        model, heads, context.split("test"), context.device, prompts=(task.records(context, "test"), context.tokenizer)
    )
    assert torch.allclose(emb[PROMPT_FUSED], emb[PROMPT], atol=1e-6)
    assert (emb[PROMPT] - emb[Modality.TEXT]).norm(dim=-1).min() > 1e-3
    metrics = task.evaluate(model, heads, "test", context)
    assert set(metrics) == set(task.blind("test", context))
    assert {f"{PROMPT}/R@1", f"{PROMPT_FUSED}/R@1"} <= set(metrics)
    task._records["test"] = [{k: v for k, v in r.items() if k != "objects"} for r in task.records(context, "test")]
    metrics = task.evaluate(model, heads, "test", context)
    assert set(metrics) == set(task.blind("test", context)) and not [k for k in metrics if k.startswith("prompt")]


def test_retrieval_reranking_and_classification_any_modality(pretrained_synth):
    context = context_of(pretrained_synth, rerank_k=3, any_modality=True)
    for name, extra in (("retrieval", "text_audio_to_image_reranked/R@1"), ("classification", "fused/text/mAP")):
        task = get_task(name).fitted(context)
        model = load_pretrained(context.cfg)
        heads = task.heads(model, context)
        draw = Draw(torch.Generator().manual_seed(0))
        losses = TaskObjective(task, model, heads, context)(first_batch(context), draw)
        assert torch.isfinite(losses["loss"])
        metrics = task.evaluate(model.eval(), heads.eval(), "test", context)
        assert extra in metrics and all(0 <= v <= 1 for v in metrics.values()), metrics


def test_retrieval_fine_tuning_weighs_hard_negatives_by_task_hard_negatives(pretrained_synth):
    """task.hard_negatives is HN-NCE's beta in the fine-tuning loss: 0 is InfoNCE, > 0 counts the
    negatives that look like the positive more, so the same batch's loss grows with it."""
    losses = []
    for beta in (0.0, 1.0):
        context = context_of(pretrained_synth, hard_negatives=beta)
        task = get_task("retrieval").fitted(context)
        model = load_pretrained(context.cfg)
        torch.manual_seed(0)
        heads = task.heads(model, context)
        draw = Draw(torch.Generator().manual_seed(0))
        losses.append(TaskObjective(task, model, heads, context)(first_batch(context, 16), draw)["retrieval_pair_loss"])
    plain, hard = losses
    assert torch.isfinite(plain) and hard > plain + 1e-4


INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def expected_answer(record: dict, question: str) -> str:
    """Answer a generated question independently, from the record's objects and `relations` list."""
    objs = record["objects"]
    named = lambda text: [i for i, o in enumerate(objs) if f"{o['color']} {o['shape']}" == text]  # noqa: E731
    if m := re.fullmatch(r"what colour is the (\w+)\?", question):
        return next(o["color"] for o in objs if o["shape"] == m[1])
    if m := re.fullmatch(r"what shape is the (\w+) object\?", question):
        return next(o["shape"] for o in objs if o["color"] == m[1])
    if question == "how many objects are there?":
        return str(len(objs))
    if m := re.fullmatch(r"how many (\w+) objects are there\?", question):
        return str(sum(o["color"] == m[1] for o in objs))
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", question):
        return "yes" if any(o["color"] == m[1] and o["shape"] == m[2] for o in objs) else "no"
    m = re.fullmatch(r"is the (\w+ \w+) (left of|right of|above|below) the (\w+ \w+)\?", question)
    [s], [o] = named(m[1]), named(m[3])
    facts = {(r["subject"], r["relation"], r["object"]) for r in record["relations"]}
    return "yes" if (s, m[2], o) in facts or (o, INVERSE[m[2]], s) in facts else "no"


def test_vqa_answers_are_true_of_the_scene(pretrained_synth):
    records = context_of(pretrained_synth).split("train").records()
    vocab = scene_vocab(records)
    kinds, answers = set(), set()
    for i, record in enumerate(records):
        questions = item_questions(record, i, vocab)
        assert questions == item_questions(record, i, vocab)  # deterministic per item
        for q in questions:
            assert q.answer == expected_answer(record, q.text), (record["objects"], q)
            kinds.add(q.kind)
            answers.add((q.kind, q.answer))
    assert kinds == set(QUESTION_TYPES)
    assert {("relation", "yes"), ("relation", "no"), ("existence", "yes"), ("existence", "no")} <= answers
    assert len(records) > 20


def test_relation_questions_follow_grid_geometry():
    # red square top-left, blue circle bottom-right, another red circle top-right
    objs = [
        {"shape": "square", "color": "red", "size": "large", "position": [0, 0]},
        {"shape": "circle", "color": "red", "size": "small", "position": [0, 2]},
        {"shape": "circle", "color": "blue", "size": "large", "position": [2, 2]},
    ]
    truth = {
        ("red square", "blue circle"): {"left of", "above"},
        ("blue circle", "red square"): {"right of", "below"},
        ("red square", "red circle"): {"left of"},
        ("red circle", "red square"): {"right of"},
        ("red circle", "blue circle"): {"above"},
        ("blue circle", "red circle"): {"below"},
    }
    vocab = {"colours": ["blue", "red"], "shapes": ["circle", "square"]}
    seen = set()
    for i in range(200):
        for q in item_questions({"objects": objs}, i, vocab):
            if q.kind == "relation":
                m = re.fullmatch(r"is the (\w+ \w+) (left of|right of|above|below) the (\w+ \w+)\?", q.text)
                assert q.answer == ("yes" if m[2] in truth[(m[1], m[3])] else "no"), q
                seen.add(q.answer)
            if q.kind == "colour":  # only the square's shape is unique
                assert q.text == "what colour is the square?" and q.answer == "red"
            if q.kind == "shape":  # only blue is unique
                assert q.text == "what shape is the blue object?" and q.answer == "circle"
    assert seen == {"yes", "no"}
    assert item_questions({"objects": []}, 0, vocab) == []
