"""The one Prefect task: run a pipeline stage, cached on the content of its inputs.

The cache key is `opt.stage_cache.cache_key` (params + content hashes of the stage's dvc.yaml
deps), so a re-run skips stages whose inputs did not change; a stage whose recorded outputs were
deleted or edited runs again (`refresh_cache`). Results are JSON (no pickles); checkpoints
travel as file paths inside them.
"""

from __future__ import annotations

import json

from prefect import task

from opt.config import load_config
from opt.stage_cache import cache_key, outputs_intact, record_run
from opt.stages import StageFailed, run_stage

# Failures a retry cannot fix: bad data, bad configuration, missing inputs.
PERMANENT = (StageFailed, ValueError, KeyError, TypeError, FileNotFoundError)


def stage_cache_key(context, parameters: dict) -> str | None:
    cfg = load_config(parameters["overrides"], parameters["config_file"])
    return cache_key(parameters["name"], cfg)


def retry_transient(task, task_run, state) -> bool:
    """Retry crashes and I/O hiccups (training resumes from its checkpoint), not permanent failures."""
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:
        return True
    return False


@task(
    task_run_name="{name}",
    cache_key_fn=stage_cache_key,
    persist_result=True,
    result_serializer="json",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=retry_transient,
)
def stage_task(name: str, overrides: list[str], config_file: str | None) -> dict:
    """Run one stage (`opt <name> <overrides>`); its result as JSON-able data."""
    result = run_stage(name, overrides, config_file)
    record_run(name, load_config(overrides, config_file))
    return json.loads(json.dumps(result if isinstance(result, dict) else {"result": result}, default=str))


def stage(name: str, overrides: list[str] | None = None, config_file: str | None = None) -> dict:
    """Call `stage_task`, recomputing when the stage's outputs are not what it last wrote."""
    overrides = list(overrides or [])
    fresh = not outputs_intact(name, load_config(overrides, config_file))
    return stage_task.with_options(refresh_cache=fresh)(name, overrides, config_file)
