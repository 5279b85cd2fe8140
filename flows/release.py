"""Release phase: pick the best evaluated model by the configured metric and package it."""

from __future__ import annotations

from prefect import flow

from flows.artifacts import publish_release
from flows.tasks import stage


@flow(name="opt-release", log_prints=True)
def release_flow(overrides: list[str] | None = None, config_file: str | None = None) -> dict:
    result = stage("package", list(overrides or []), config_file)
    publish_release(result)
    return result
