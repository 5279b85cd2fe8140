"""`opt package`: the best evaluated model -> the BentoML model store -> a Bento.

Candidates: the run at paths.root and each `opt compare` variant (compare/<variant>/), each
with its metrics/eval.json. The best by `serve.metric` (a dotted path task.split.metric into
eval.json; `serve.metric_mode` max or min) is bundled (opt.serving.bundle) straight into a new
model of the store (`bentoml.models.create`) with its metadata: metrics, data version, git
revision and resolved config. Then a Bento is built from the project's bentofile.yaml, and
metrics/package.json records the tags and the metric for DVC. The store is BENTOML_HOME
(`serve.bentoml_home`, else $BENTOML_HOME, else ~/bentoml), never inside the project.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from opt.config import PROJECT_ROOT, path, root_dir, to_yaml
from opt.data.dataset import read_params
from opt.files import git_revision, metric_value, non_finite_numbers, write_metrics
from opt.serving.bundle import Candidate, write_bundle


def candidates(cfg) -> list[Candidate]:
    """The run itself and every `opt compare` variant that has metrics/eval.json."""
    runs = [Candidate("run", path(cfg, "models"), path(cfg, "metrics") / "eval.json")]
    compare = root_dir(cfg) / "compare"
    for variant in sorted(compare.iterdir()) if compare.is_dir() else []:
        runs.append(Candidate(f"compare/{variant.name}", variant / "models", variant / "metrics" / "eval.json"))
    return [c for c in runs if c.metrics.exists() and (c.models / "pretrain" / "model.safetensors").exists()]


def unservable(candidate: Candidate, results: dict) -> list[str]:
    """Why a candidate must not be served: its non-finite metrics and weight files (empty: none)."""
    from safetensors.torch import load_file

    from opt.train.checkpoint import non_finite

    problems = [f"metric {m} is not finite" for m in non_finite_numbers(results)]
    for file in sorted(candidate.models.glob("pretrain/*.safetensors")) + sorted(
        candidate.models.glob("finetune/*/*.safetensors")
    ):
        bad = non_finite(load_file(str(file)))
        problems += [f"{file.relative_to(candidate.models)}: {len(bad)} non-finite tensors ({bad[0]})"] if bad else []
    return problems


def finite_candidates(cfg) -> list[tuple[Candidate, dict]]:
    """(candidate, its eval.json) of every candidate whose weights and metrics are all finite;
    the others are refused with their reasons printed; StageFailed when none is left."""
    from opt.stages import StageFailed

    scored = []
    for candidate in candidates(cfg):
        results = candidate.eval_results()
        problems = unservable(candidate, results)
        if problems:
            print(f"package: refusing {candidate.name}: {'; '.join(problems[:5])}")
        else:
            scored.append((candidate, results))
    if not scored:
        raise StageFailed("no evaluated model with finite weights and metrics to package")
    return scored


def select_best(scored: list[tuple[Candidate, dict]], metric: str, mode: str) -> tuple[Candidate, float]:
    """The candidate whose `metric` is highest (mode max) or lowest (min); ties keep the first."""
    if mode not in ("max", "min"):
        raise ValueError(f"serve.metric_mode must be max or min, got {mode!r}")
    valued = [(c, v) for c, results in scored if (v := metric_value(results, metric)) is not None]
    if not valued:
        raise ValueError(f"no evaluated model has metric {metric!r}: run `opt evaluate` or set serve.metric")
    sign = 1.0 if mode == "max" else -1.0
    return max(valued, key=lambda cv: sign * cv[1])


def data_version(cfg) -> str:
    """md5 of data/raw in dvc.lock when DVC tracked it, else the manifest's sha256 from prepare."""
    lock = root_dir(cfg) / "dvc.lock"
    raw = str(cfg.paths.raw)
    if lock.exists():
        for out in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get("ingest", {}).get("outs", []):
            if out.get("path") == raw and out.get("md5"):
                return f"dvc-md5:{out['md5']}"
    return f"manifest-sha256:{read_params(path(cfg, 'prepared'))['source']['manifest_sha256']}"


def bentoml_home(cfg) -> Path:
    """The BentoML store folder; refused inside the project (it would be versioned and copied)."""
    home = (
        Path(cfg.serve.bentoml_home or os.environ.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser().resolve()
    )
    if home == root_dir(cfg) or root_dir(cfg) in home.parents:
        raise ValueError(f"BentoML home {home} lies inside the project {root_dir(cfg)}: set serve.bentoml_home")
    os.environ["BENTOML_HOME"] = str(home)  # read by bentoml when first used in this process
    return home


def without_none(value):
    """Nested dicts/lists with None entries dropped (BentoML metadata refuses None)."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value if v is not None]
    return value


def import_model(cfg, best: Candidate, metadata: dict):
    """A new model in the store holding the bundle of `best`; returns the bentoml Model."""
    import bentoml

    with bentoml.models.create(
        str(cfg.serve.model_name),
        module="opt.serving",
        metadata=metadata,
        labels={"candidate": best.name.replace("/", "-")},
    ) as model:
        write_bundle(cfg, best, Path(model.path))
    return model


def bentofile(cfg) -> Path:
    """bentofile.yaml of the run's project, else of the project holding this code."""
    for folder in (root_dir(cfg), PROJECT_ROOT):
        if (folder / "bentofile.yaml").exists():
            return folder / "bentofile.yaml"
    raise FileNotFoundError(f"no bentofile.yaml in {root_dir(cfg)} or {PROJECT_ROOT}: the Bento is built from it")


def serve_args(cfg, model_tag: str) -> dict:
    """The Bento's serve-time arguments (opt.serving.service.ServeArgs): the model and the server settings."""
    s = cfg.serve
    return {
        "model": model_tag,
        "workers": int(s.workers),
        "host": str(s.host),
        "port": int(s.port),
        "timeout": int(s.timeout),
    }


def build_bento(cfg, spec: Path, model_tag: str) -> str:
    """Build a Bento from `spec` serving `model_tag`; returns the Bento tag. The build context is
    the src/ folder beside `spec`, so the Bento carries the `opt` package at its top level."""
    import bentoml

    bento = bentoml.bentos.build_bentofile(
        str(spec), build_ctx=str(spec.parent / "src"), name=str(cfg.serve.bento_name), args=serve_args(cfg, model_tag)
    )
    return str(bento.tag)


def package(cfg) -> dict:
    """Stage `opt package`: choose, import, build; writes metrics/package.json."""
    home = bentoml_home(cfg)
    spec = bentofile(cfg) if cfg.serve.build_bento else None
    scored = finite_candidates(cfg)
    best, value = select_best(scored, str(cfg.serve.metric), str(cfg.serve.metric_mode))
    metadata = {
        "metric": str(cfg.serve.metric),
        "metric_value": value,
        "candidate": best.name,
        "metrics": without_none(next(results for c, results in scored if c is best)),
        "data_version": data_version(cfg),
        "git_revision": git_revision(root_dir(cfg), mark_dirty=True) or "none",
        "config": to_yaml(cfg),
    }  # resolved; YAML text because BentoML metadata holds no None
    model = import_model(cfg, best, metadata)
    bento = build_bento(cfg, spec, str(model.tag)) if spec else None
    result = {
        "model": str(model.tag),
        "bento": bento,
        "candidate": best.name,
        "metric": str(cfg.serve.metric),
        "metric_value": value,
        "candidates": len(scored),
    }
    write_metrics(cfg, "package", result)
    print(f"package: {best.name} ({cfg.serve.metric} = {value:.4f}) -> model {model.tag}, bento {bento} in {home}")
    return result
