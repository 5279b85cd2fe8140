"""opt.serving.demo.call_api: the page shows a refused input's reason (the API's 4xx) and hides
everything else behind BentoML's 5xx sentence; no running server (a stand-in service)."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace

import bentoml
import gradio as gr
import pytest
from bentoml.exceptions import BentoMLException, ServiceUnavailable

from opt.serving import demo
from opt.serving.service import OPTService


def shown(monkeypatch, error: Exception | None, **inputs) -> str:
    """What the page shows when the `caption` API raises `error` for `inputs`."""

    async def caption(**kwargs):
        raise error

    service = SimpleNamespace(bento_service=OPTService, caption=SimpleNamespace(local=caption))
    monkeypatch.setattr(bentoml, "get_current_service", lambda: service)
    with pytest.raises(gr.Error) as refused:
        asyncio.run(demo.call_api("caption", **inputs))
    return refused.value.message


def test_the_page_shows_4xx_reasons_and_hides_the_rest(monkeypatch):
    image = Path("x.png")
    bad = BentoMLException("bad image: corrupt image", error_code=HTTPStatus.BAD_REQUEST)
    assert shown(monkeypatch, bad, image=image) == "bad image: corrupt image"
    assert shown(monkeypatch, ServiceUnavailable("the model is overloaded"), image=image) == demo.UNEXPECTED
    assert shown(monkeypatch, RuntimeError("at /srv/secret"), image=image) == demo.UNEXPECTED
    assert shown(monkeypatch, None) == "image: Field required"  # the API's input model, before the method
