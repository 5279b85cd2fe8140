"""Small file helpers shared by stages: content hashes, metrics JSON, reading a metric back, the git revision."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from pathlib import Path

from opt.config import path


def sha256_file(file: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(file).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """{path relative to `folder` (posix): sha256} of every file below it; empty if it is absent."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def write_metrics(cfg, name: str, metrics: dict) -> Path:
    """metrics/<name>.json under the run's root (what `dvc metrics show` reads)."""
    out = path(cfg, "metrics") / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    return out


def metric_value(results: dict, dotted: str) -> float | None:
    """The number at a dotted path (keys may hold dots or slashes: the longest matching key wins)."""
    node, rest = results, dotted
    while rest:
        if not isinstance(node, dict):
            return None
        keys = [k for k in node if rest == k or rest.startswith(f"{k}.")]
        if not keys:
            return None
        key = max(keys, key=len)
        node, rest = node[key], rest[len(key) + 1 :]
    return float(node) if isinstance(node, (int, float)) and math.isfinite(node) else None


def non_finite_numbers(tree, prefix: str = "") -> list[str]:
    """Dotted paths of the numbers in a nested dict/list (e.g. metrics JSON) that are NaN or infinite."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in non_finite_numbers(v, f"{prefix}{k}.")]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in non_finite_numbers(v, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if isinstance(tree, float) and not math.isfinite(tree) else []


def git_revision(root: Path, mark_dirty: bool = False) -> str | None:
    """HEAD's commit id of the repository holding `root` (with `mark_dirty`, suffixed "-dirty" when
    tracked files have local changes); None outside a git repository or before its first commit."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--verify", "--quiet", "HEAD")
        dirty = mark_dirty and bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return None
    return (head + ("-dirty" if dirty else "")) or None
