"""Data phase: ingest -> validate -> version. A failed validation fails the flow here."""

from __future__ import annotations

from prefect import flow

from flows.artifacts import publish_validation
from flows.tasks import stage


@flow(name="opt-data", log_prints=True)
def data_flow(overrides: list[str] | None = None, config_file: str | None = None) -> dict:
    overrides = list(overrides or [])
    results = {"ingest": stage("ingest", overrides, config_file)}
    results["validate"] = stage("validate", overrides, config_file)
    publish_validation(overrides, config_file)
    results["version"] = stage("version", overrides, config_file)
    return results
