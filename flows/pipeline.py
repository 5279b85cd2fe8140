"""The parent flow `opt-pipeline` (data -> training -> release) and `opt-stage` (one stage)."""

from __future__ import annotations

from prefect import flow

from flows.data import data_flow
from flows.release import release_flow
from flows.tasks import stage
from flows.training import training_flow


@flow(name="opt-pipeline", log_prints=True)
def opt_pipeline(overrides: list[str] | None = None, config_file: str | None = None) -> dict:
    """The whole pipeline, as `dvc repro` runs it; each phase is a subflow in the UI."""
    return {
        "data": data_flow(overrides, config_file),
        "training": training_flow(overrides, config_file),
        "release": release_flow(overrides, config_file),
    }


@flow(name="opt-stage", log_prints=True)
def stage_flow(name: str, overrides: list[str] | None = None, config_file: str | None = None) -> dict:
    """One stage on demand (the UI's "Run" with parameters), cached like the others."""
    return stage(name, overrides, config_file)


if __name__ == "__main__":
    import sys

    print(opt_pipeline(sys.argv[1:]))
