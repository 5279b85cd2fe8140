"""Downstream tasks: a registry, one module per task (`opt finetune task=NAME`, `opt evaluate`)."""

from __future__ import annotations

from importlib import import_module

TASK_NAMES = ("retrieval", "classification", "vqa", "captioning", "speech_recognition", "text_to_image")
TASKS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a Task subclass available under its `name`."""
    TASKS[cls.name] = cls
    return cls


def get_task(name: str):
    """A new instance of the task registered as `name` (its module is imported on first use)."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASK_NAMES)}")
    if name not in TASKS:
        import_module(f"opt.tasks.{name}")
    return TASKS[name]()
