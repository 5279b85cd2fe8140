"""Scene generation fanned out through a Prefect task runner (`data.executor=prefect`).

Each block of scenes becomes one Prefect task run on `data.task_runner` ("module:Class"):
the default `ProcessPoolTaskRunner` uses this machine's cores; a Dask or Ray task runner
(prefect-dask, prefect-ray) spreads the blocks over nodes that share the output folder.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from importlib import import_module

from prefect import task
from prefect.cache_policies import NO_CACHE

from opt.data.synth import WorkerContext, synth_block


@task(name="synth-block", cache_policy=NO_CACHE, retries=1)
def synth_block_task(context: WorkerContext, plans: list) -> list[dict]:
    return synth_block(context, plans)


def make_task_runner(spec: str, workers: int):
    """`module:Class` -> an instance; process pools get `max_workers=workers`."""
    module, _, name = spec.partition(":")
    runner_class = getattr(import_module(module), name)
    takes_workers = "max_workers" in inspect.signature(runner_class).parameters
    return runner_class(max_workers=workers) if takes_workers else runner_class()


def map_blocks_with_prefect(
    blocks: list[list], workers: int, context: WorkerContext, spec: str
) -> Iterator[list[dict]]:
    """Records of each block, in block order, computed as Prefect task runs."""
    with make_task_runner(spec, workers) as runner:
        futures = [runner.submit(synth_block_task, {"context": context, "plans": block}) for block in blocks]
        for future in futures:
            yield future.result()
