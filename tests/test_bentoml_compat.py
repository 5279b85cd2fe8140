"""opt.serving.bentoml_compat: every BentoML defect it works around is still there, and each
work-around does its job; importing the service reads no model and patches nothing.

A test named `test_bentoml_still_...` failing after a BentoML upgrade means BentoML changed what
a patch replaces: revisit the patch (it may be unneeded now, or need porting).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap
from http import HTTPStatus
from pathlib import Path
from typing import Optional

import bentoml
import httpx
import pytest
from _bentoml_impl.serde import MultipartSerde
from bentoml.exceptions import BentoMLException
from starlette.datastructures import UploadFile
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from opt.serving import bentoml_compat as compat
from opt.serving.bentoml_compat import OptionalFile


@bentoml.service
class Echo:
    """A tiny service: what BentoML makes of file inputs."""

    @bentoml.api
    async def upload(self, file: OptionalFile = None, note: str | None = None) -> str:
        return "none" if file is None else Path(file).read_text()

    @bentoml.api
    async def required(self, file: Path) -> str:
        return Path(file).read_text()

    @staticmethod
    def openapi_info() -> dict:
        return {"title": "Echo", "version": "v1", "description": "Echoes uploads."}

    @bentoml.api
    async def refuse(self) -> str:
        try:
            raise ValueError("the cause")
        except ValueError as e:
            raise BentoMLException("refused: a reason", error_code=HTTPStatus.BAD_REQUEST) from e


@pytest.fixture(autouse=True)
def unpatched():
    """Every test starts and ends with BentoML's own functions."""
    compat.remove_patches()
    yield
    compat.remove_patches()


@pytest.fixture(scope="module")
def echo():
    with TestClient(Echo.to_asgi(), raise_server_exceptions=False) as client:
        yield client


MALFORMED = {"content": b"--b\r\nnot a part", "headers": {"content-type": "multipart/form-data; boundary=b"}}


# ---- MultipartSerde.ensure_file: a file field sent as text ------------------------------------
def test_bentoml_still_fetches_file_fields_sent_as_text(monkeypatch):
    import _bentoml_impl.serde as serde

    original = compat.original(MultipartSerde, "ensure_file")
    assert isinstance(MultipartSerde.__dict__["ensure_file"], staticmethod)
    assert inspect.iscoroutinefunction(original) and list(inspect.signature(original).parameters) == ["obj"]
    fetched = []

    async def get(self, url, **kwargs):
        fetched.append(url)
        return httpx.Response(200, content=b"downloaded", request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx.AsyncClient, "get", get)
    monkeypatch.setattr(serde, "make_safe_connect", __import__("contextlib").nullcontext)  # needs uvloop
    file = asyncio.run(original("http://example.invalid/cat.png"))
    assert fetched == ["http://example.invalid/cat.png"]
    assert isinstance(file, UploadFile) and file.filename == "cat.png" and file.file.read() == b"downloaded"


def test_patched_file_fields_must_be_uploads(monkeypatch, echo):
    async def get(self, url, **kwargs):
        raise AssertionError(f"fetched {url}")

    monkeypatch.setattr(httpx.AsyncClient, "get", get)
    compat.apply_patches()
    upload = UploadFile(file=__import__("io").BytesIO(b"x"), filename="x.png")
    assert asyncio.run(MultipartSerde.ensure_file(upload)) is upload
    with pytest.raises(BentoMLException) as refused:
        asyncio.run(MultipartSerde.ensure_file("http://example.invalid/cat.png"))
    assert refused.value.error_code == 400
    r = echo.post("/upload", files={"note": (None, "n")}, data={"file": "http://example.invalid/cat.png"})
    assert r.status_code == 400 and "URLs are not fetched" in r.text


# ---- MultipartSerde.parse_request: a malformed multipart body ---------------------------------
def test_bentoml_still_answers_a_malformed_multipart_body_with_a_500(echo):
    original = compat.original(MultipartSerde, "parse_request")
    assert inspect.iscoroutinefunction(original)
    assert list(inspect.signature(original).parameters) == ["self", "request", "cls"]
    assert echo.post("/required", **MALFORMED).status_code == 500


def test_bentoml_still_answers_a_text_file_part_that_is_not_utf8_with_a_500(echo):
    r = echo.post("/upload", files={"note": ("note.txt", b"a \xff b")})
    assert r.status_code == 500


def test_patched_malformed_multipart_body_is_a_400(echo):
    compat.apply_patches()
    r = echo.post("/required", **MALFORMED)
    assert r.status_code == 400 and "bad multipart body" in r.text
    r = echo.post("/upload", files={"note": ("note.txt", b"a \xff b")})
    assert r.status_code == 400 and "not valid utf-8 text" in r.text
    assert echo.post("/required", files={"file": ("a.txt", b"fine")}).text == "fine"


# ---- a 4xx: its body (JSONResponse) and its log line (log_exception) -----------------------------
def errors_logged(caplog) -> list:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_bentoml_still_answers_a_4xx_with_a_list_and_logs_it_with_tracebacks(echo, caplog):
    with caplog.at_level(logging.INFO):
        r = echo.post("/refuse", json={})
    assert r.status_code == 400 and r.json() == [{"error": "refused: a reason"}]
    assert errors_logged(caplog)


def test_patched_4xx_is_an_object_and_one_log_line(echo, caplog):
    compat.apply_patches()
    with caplog.at_level(logging.INFO):
        refused, invalid = echo.post("/refuse", json={}), echo.post("/required", json={})
    assert refused.status_code == 400 and refused.json() == {"error": "refused: a reason"}
    assert invalid.status_code == 400 and invalid.json()["error"].endswith("validation error for Input")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert lines == [
        "refused POST /refuse (400): refused: a reason",
        "refused POST /required (400): file: Field required",
    ]
    assert not errors_logged(caplog)


# ---- the OpenAPI document: generate_spec (info), APIMethod.openapi_request (JSON bodies) -----------
def openapi() -> dict:
    return Echo.openapi_spec.asdict()


def request_media(path: str) -> dict:
    return openapi()["paths"][path]["post"]["requestBody"]["content"]


def test_bentoml_still_shows_its_readme_template_and_no_version():
    info = openapi()["info"]
    assert info["title"] == "Echo" and info["version"] == "None" and "customize this README" in info["description"]


def test_patched_openapi_info_is_the_services():
    compat.apply_patches()
    assert openapi()["info"] == {"title": "Echo", "version": "v1", "description": "Echoes uploads."}


def test_bentoml_still_documents_only_the_form_of_an_api_with_optional_files():
    assert list(request_media("/upload")) == ["multipart/form-data"]


def test_patched_json_body_is_documented_where_every_file_is_optional(echo):
    compat.apply_patches()
    media = request_media("/upload")
    assert set(media) == {"application/json", "multipart/form-data"}
    assert set(media["application/json"]["schema"]["properties"]) == {"note"}
    assert list(request_media("/required")) == ["multipart/form-data"]  # a required file: the form only
    assert echo.post("/upload", json={"note": "n"}).text == "none"  # the documented JSON body is accepted


# ---- the Swagger page at / (SwaggerPage, no patch) ---------------------------------------------------
def test_bentoml_swagger_page_still_loads_google_tag_manager_and_hides_the_title():
    import _bentoml_impl.server.app as server_app

    page = (Path(server_app.__file__).parent / "main-openapi.html").read_text()
    assert "googletagmanager.com" in page and "<title>BentoML Prediction Service</title>" in page


def test_swagger_page_answers_get_slash_with_the_title_and_no_tag_manager():
    async def app(scope, receive, send):
        await PlainTextResponse("the API")(scope, receive, send)

    client = TestClient(compat.SwaggerPage(app, title="Echo <service>"))
    page = client.get("/").text
    assert "<title>Echo &lt;service&gt;</title>" in page and "swagger-ui-bundle.js" in page
    assert "googletagmanager" not in page and "https://" not in page.split("<body>")[0]
    assert client.get("/docs.json").text == "the API" and client.post("/").text == "the API"


# ---- starlette.formparsers._user_safe_decode: a text field that is not valid UTF-8 -------------
NOT_UTF8 = b"a red \xff\xfe circle"  # \xff never occurs in UTF-8


def test_starlette_still_reads_a_text_field_that_is_not_utf8_as_latin1(echo):
    import starlette.formparsers

    original = compat.original(starlette.formparsers, "_user_safe_decode")
    assert original(NOT_UTF8, "utf-8") == NOT_UTF8.decode("latin-1")
    r = echo.post("/upload", files={"file": ("a.txt", b"x"), "note": (None, NOT_UTF8)})
    assert r.status_code == 200


def test_patched_text_field_that_is_not_utf8_is_a_400(echo):
    compat.apply_patches()
    r = echo.post("/upload", files={"file": ("a.txt", b"uploaded"), "note": (None, NOT_UTF8)})
    assert r.status_code == 400 and "not valid utf-8 text" in r.text
    ok = echo.post("/upload", files={"file": ("a.txt", b"uploaded"), "note": (None, "un cercle rouge é".encode())})
    assert ok.status_code == 200 and ok.text == "uploaded"


# ---- applying and removing ---------------------------------------------------------------------
def test_patches_apply_once_and_come_off():
    originals = {name: compat.original(MultipartSerde, name) for name in ("ensure_file", "parse_request")}
    assert compat.patched() == {
        "MultipartSerde.ensure_file": False,
        "MultipartSerde.parse_request": False,
        "_bentoml_impl.server.app.JSONResponse": False,
        "_bentoml_impl.server.app.log_exception": False,
        "_bentoml_sdk.service.openapi.generate_spec": False,
        "APIMethod.openapi_request": False,
        "starlette.formparsers._user_safe_decode": False,
    }
    compat.apply_patches()
    first = dict(MultipartSerde.__dict__)
    compat.apply_patches()
    assert all(MultipartSerde.__dict__[name] is first[name] for name in originals)  # idempotent
    assert all(compat.patched().values())
    assert isinstance(MultipartSerde.__dict__["ensure_file"], staticmethod)  # still called as BentoML calls it
    assert {name: compat.original(MultipartSerde, name) for name in originals} == originals
    compat.remove_patches()
    assert MultipartSerde.__dict__["ensure_file"].__func__ is originals["ensure_file"]
    assert MultipartSerde.__dict__["parse_request"] is originals["parse_request"]


# ---- optional file inputs (no patch: OptionalFile) ---------------------------------------------
def test_bentoml_still_ignores_path_or_none_and_cannot_declare_optional_path():
    """`Path | None` is no upload (BentoML 1.4 patches typing.Union only), and Optional[Path] fails
    (BentoML's FileSchema is unhashable): OptionalFile stays needed while both hold."""
    from _bentoml_sdk.io_models import IODescriptor
    from bentoml.validators import FileSchema

    async def pep604(self, file: Path | None = None) -> str: ...

    async def optional(self, file: Optional[Path] = None) -> str: ...  # noqa: UP045

    schema = IODescriptor.from_input(pep604, skip_self=True).model_json_schema()["properties"]["file"]
    assert "file" not in json.dumps(schema) and "path" in json.dumps(schema)
    assert FileSchema.__hash__ is None
    with pytest.raises(TypeError, match="input spec"):
        IODescriptor.from_input(optional, skip_self=True)


def test_optional_file_accepts_an_upload_and_defaults_to_none(echo):
    assert echo.post("/upload", files={"file": ("a.txt", b"uploaded")}).text == "uploaded"
    assert echo.post("/upload", files={"note": (None, "n")}).text == "none"
    assert echo.post("/upload", json={"note": "n"}).text == "none"
    assert echo.post("/upload", json={"file": None}).status_code == 400


def test_every_file_input_of_the_service_is_an_upload():
    from opt.serving.service import OPTService

    files = 0
    for name, api in OPTService.apis.items():
        spec = api.input_spec
        properties = spec.model_json_schema().get("properties", {})
        for field, info in spec.model_fields.items():
            if "Path" in str(info.annotation):
                files += 1
                assert field in spec.multipart_fields and properties[field]["type"] == "file", (name, field)
    assert files == 8  # caption, transcribe, classify, vqa: 1 each; retrieve, embed: audio and image


# ---- CorkDispatcher (private, used as is) ------------------------------------------------------
def test_bentoml_still_has_the_cork_dispatcher_adaptive_batcher_uses():
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    params = inspect.signature(CorkDispatcher.__init__).parameters
    assert {"max_latency_in_ms", "max_batch_size", "fallback", "get_batch_size"} <= set(params)
    batches = []

    def double(items):
        batches.append(len(items))
        return [2 * x for x in items]

    async def calls():
        call = compat.adaptive_batcher(double, max_batch_size=4, max_latency_ms=5000)
        return await asyncio.gather(*(call(i) for i in range(8)))

    assert asyncio.run(calls()) == [2 * i for i in range(8)]
    assert sum(batches) == 8 and max(batches) <= 4


# ---- importing the service ---------------------------------------------------------------------
IMPORT_CHECK = textwrap.dedent(
    """
    import json, os, sys
    from bentoml._internal.models import ModelStore
    from bentoml._internal.utils.args import set_arguments
    from _bentoml_sdk.models.base import BentoModel
    import opt.serving.bundle

    def untouchable(*args, **kwargs):
        raise AssertionError("the model store was read at import")

    ModelStore.get = ModelStore.list = untouchable
    BentoModel.resolve = untouchable
    BentoModel.stored = property(untouchable)
    opt.serving.bundle.read_bundle = untouchable
    set_arguments({"model": "opt:abc123", "workers": "2", "timeout": "30"})  # as `bentoml serve --arg` does

    import opt.serving.service as service
    from opt.serving.bentoml_compat import patched
    from _bentoml_sdk.validators import FileSchema

    print(json.dumps({
        "patched": patched(),
        "file_schema_hash": FileSchema.__hash__ is not None,
        "models": [str(m.tag) for m in service.OPTService.models],
        "config": service.OPTService.config,
        "home": sorted(os.listdir(os.environ["BENTOML_HOME"])),
    }))
    """
)


def test_importing_the_service_reads_no_model_and_patches_nothing(tmp_path):
    home = tmp_path / "bentoml_home"
    home.mkdir()
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "DO_NOT_TRACK": "1"}
    env.pop("OPT_SERVE_MODEL", None)
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["patched"] and not any(seen["patched"].values())
    assert not seen["file_schema_hash"]
    assert seen["models"] == ["opt:abc123"]  # a reference, recorded by `bentoml build`
    assert seen["config"]["workers"] == 2 and seen["config"]["traffic"] == {"timeout": 30}
    assert seen["config"]["http"] == {"host": "127.0.0.1", "port": 3000}
    assert seen["home"] == []


def test_serve_arguments_default_to_serve_config(monkeypatch):
    from opt.config import ServeConfig
    from opt.serving.service import ServeArgs

    monkeypatch.delenv("OPT_SERVE_MODEL", raising=False)
    args, defaults = ServeArgs(), ServeConfig()
    assert (args.model, args.workers, args.host, args.port, args.timeout) == (
        "opt:latest",
        defaults.workers,
        defaults.host,
        defaults.port,
        defaults.timeout,
    )
    monkeypatch.setenv("OPT_SERVE_MODEL", "opt:v1")
    assert ServeArgs().model == "opt:v1" and ServeArgs(model="opt:v2", workers="3").workers == 3
