"""Skip stages whose inputs did not change, outside DVC too (Prefect caches on these keys).

`dvc.yaml` is the one declaration of what each stage reads (deps, params) and writes (outs,
metrics, plots). `cache_key(name, cfg)` hashes the stage's params and the content of its deps;
`record_run` notes the content of its outputs after a run, and `outputs_intact` says whether
they are still those bytes, so a deleted or edited output makes the stage run again.
Paths in dvc.yaml are the default `paths.*`; they are mapped to the run's configured ones.
Code deps (`src/...`) are read under `PROJECT_ROOT`, looked up at call time (tests point it at a
copy); they cover the stage's whole import closure (`opt.code_deps`, checked by the tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import fields
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from opt.code_deps import stage_code
from opt.config import PROJECT_ROOT, PathsConfig, path, root_dir
from opt.files import sha256_file

_FILE_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns, ctime_ns, inode) -> sha256, per process
# A file changed this recently may change again within the same timestamp tick, keeping its stat
# key: its hash is not remembered (git's "racy clean" rule).
_RACY_NS = 2_000_000_000


def dvc_stages(project: Path | None = None) -> dict[str, dict]:
    """Stages of `dvc.yaml`, `foreach` expanded: {"ingest": {...}, "finetune@vqa": {...}}."""
    spec = yaml.safe_load(((project or PROJECT_ROOT) / "dvc.yaml").read_text())["stages"]
    stages = {}
    for name, stage in spec.items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        for item in stage["foreach"]:
            text = json.dumps(stage["do"]).replace("${item}", str(item))
            stages[f"{name}@{item}"] = json.loads(text)
    return stages


def stage_id(name: str, cfg) -> str:
    """The dvc.yaml name of a stage run: `finetune` runs one task, `finetune@<task.name>`."""
    return f"{name}@{cfg.task.name}" if name == "finetune" else name


def resolve(entry: str, cfg) -> Path:
    """A dvc.yaml path for this run: `data/raw` -> `path(cfg, "raw")`, `src/...` -> the code."""
    defaults = sorted(
        ((f.name, f.default) for f in fields(PathsConfig) if isinstance(f.default, str)), key=lambda item: -len(item[1])
    )
    for name, default in defaults:
        if entry == default or entry.startswith(default + "/"):
            return path(cfg, name) / entry[len(default) :].lstrip("/")
    code = PROJECT_ROOT / entry
    return code if code.exists() else root_dir(cfg) / entry


def _names(entries) -> list[tuple[str, dict]]:
    """dvc.yaml lists mix `path` and `{path: {options}}`."""
    out = []
    for entry in entries or []:
        out += [(entry, {})] if isinstance(entry, str) else [(k, v or {}) for k, v in entry.items()]
    return out


def file_digest(file: Path) -> str:
    """sha256 of the file, remembered per stat key unless the file changed within `_RACY_NS`."""
    stat = file.stat()
    key = (str(file), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key in _FILE_HASHES:
        return _FILE_HASHES[key]
    digest = sha256_file(file)
    if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) > _RACY_NS:
        _FILE_HASHES[key] = digest
    return digest


def tree_digest(target: Path) -> str:
    """sha256 over (relative path, content hash) of every file under `target`; "missing" if absent.
    `__pycache__` folders are skipped, as in .dvcignore: bytecode is not a stage's input."""
    if target.is_file():
        return file_digest(target)
    if not target.is_dir():
        return "missing"
    digest = hashlib.sha256()
    files = (p for p in target.rglob("*") if "__pycache__" not in p.relative_to(target).parts and p.is_file())
    for file in sorted(files):
        digest.update(f"{file.relative_to(target).as_posix()}\0{file_digest(file)}\n".encode())
    return digest.hexdigest()


def _param(cfg, key: str):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _params(stage: dict, cfg) -> dict:
    """The values of the stage's dvc.yaml `params` keys (`data`, `task.steps`) in this run's config."""
    return {key: _param(cfg, key) for key in stage.get("params", [])}


def cache_key(name: str, cfg) -> str | None:
    """Hash of the stage's params and dep contents; None for stages dvc.yaml does not declare."""
    stage = dvc_stages().get(stage_id(name, cfg))
    if stage is None:
        return None
    inputs = {dep: tree_digest(resolve(dep, cfg)) for dep, _ in _names(stage.get("deps"))}
    blob = json.dumps(
        {"stage": stage_id(name, cfg), "root": str(root_dir(cfg)), "params": _params(stage, cfg), "deps": inputs},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def outputs_digest(name: str, cfg) -> str:
    """Content hash of what the stage writes (resumable `persist` folders excluded)."""
    stage = dvc_stages()[stage_id(name, cfg)]
    outs = [entry for key in ("outs", "metrics", "plots") for entry in _names(stage.get(key))]
    return tree_digest_many([resolve(out, cfg) for out, options in outs if not options.get("persist")])


def tree_digest_many(targets: list[Path]) -> str:
    return hashlib.sha256("\n".join(f"{t}\0{tree_digest(t)}" for t in targets).encode()).hexdigest()


def _record_file(name: str, cfg) -> Path:
    return path(cfg, "runs") / f"{stage_id(name, cfg).replace('@', '-')}.outputs.json"


def record_run(name: str, cfg) -> None:
    """After a successful run: remember the content of the stage's outputs."""
    if stage_id(name, cfg) not in dvc_stages():
        return
    record = _record_file(name, cfg)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"outputs": outputs_digest(name, cfg)}))
    os.replace(tmp, record)


def outputs_intact(name: str, cfg) -> bool:
    """True when the stage ran here before and its outputs are still exactly what it wrote."""
    record = _record_file(name, cfg)
    if stage_id(name, cfg) not in dvc_stages() or not record.exists():
        return False
    return json.loads(record.read_text())["outputs"] == outputs_digest(name, cfg)


def covered(file: str, deps: list[str]) -> bool:
    """A dep covers the file itself or any file under it (`src/opt/model` covers its modules)."""
    return any(file == dep or file.startswith(dep.rstrip("/") + "/") for dep in deps)


def uncovered(project: Path | None = None) -> dict[str, list[str]]:
    """dvc.yaml stage -> files its code imports that none of its deps cover (empty lists omitted)."""
    project = project or PROJECT_ROOT
    out = {}
    for name, stage in dvc_stages(project).items():
        deps = [dep for dep, _ in _names(stage.get("deps"))]
        missing = [file for file in stage_code(name, project) if not covered(file, deps)]
        if missing:
            out[name] = missing
    return out


def print_uncovered(project: Path | None = None) -> None:
    gaps = uncovered(project)
    for name, files in gaps.items():
        print(f"{name}: {' '.join(files)}")
    print("every stage's code is covered by its dvc.yaml deps" if not gaps else f"{len(gaps)} stage(s) miss code deps")
