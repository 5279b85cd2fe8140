"""Every use of BentoML's (and Starlette's) private modules by the service, in one place (BentoML 1.4.40).

Patches of BentoML defects, applied by `apply_patches()` when `OPTService` is constructed (once
per process; importing this module or the service patches nothing):

- `MultipartSerde.ensure_file`: a multipart file field sent as text is fetched as a URL by
  BentoML; refused instead with a 400 (nothing downloads at runtime, no SSRF).
- `MultipartSerde.parse_request`: a malformed multipart body raises Starlette's HTTPException,
  and a text field sent as a file part that is not UTF-8 a UnicodeDecodeError (json.loads of the
  bytes); BentoML answers both with a 500; answered with a 4xx.
- `_bentoml_impl.server.app.JSONResponse`: a 4xx body is a JSON list holding `{"error": reason}`
  (BentoML's API route wraps it in a tuple); answered with the object itself. (The route itself
  is bound when the app is built, before the service patches anything: its globals are not.)
- `_bentoml_impl.server.app.log_exception`: every refused request is logged as an ERROR with its
  chained tracebacks; a 4xx (a refused input) is logged as one INFO line with its reason instead.
- `_bentoml_sdk.service.openapi.generate_spec`: the Swagger page at / shows the service as
  "OPTService", version "None" and BentoML's README template (with badges fetched from the
  internet); shown instead with the service class's `openapi_info()` (title, version, description).
- `APIMethod.openapi_request`: an API whose file inputs are all optional (OptionalFile) also takes
  a JSON body without them, but only the multipart form is documented; both are.
- `starlette.formparsers._user_safe_decode`: a multipart text field (or field name, or file name)
  that is not valid in its charset (UTF-8 unless declared) is decoded as Latin-1, so mojibake
  reaches the model with a 200; refused instead (a 400 through the patch above).

A defect worked around without a patch: BentoML turns a `Path` input into an uploaded file only
when the annotation is `Path` or `typing.Optional[Path]` (which then fails: its `FileSchema` is
unhashable), not `Path | None`. `OptionalFile` declares an optional file input with the public
`FileSchema` itself.

Replaced without a patch: BentoML's Swagger page at / loads Google Tag Manager from the internet
and hides the service's title; `SwaggerPage` (ASGI middleware) answers GET / with BentoML's page
minus both.

Private API used as is: `adaptive_batcher` runs BentoML's adaptive batching dispatcher
(`CorkDispatcher`) in-process.

tests/test_bentoml_compat.py checks each defect is still there in BentoML (an upgrade that fixes
or renames it fails a test: revisit the patch) and that each patch does its job.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Annotated

from bentoml.exceptions import BentoMLException
from bentoml.validators import FileSchema

OptionalFile = Annotated[Path | None, FileSchema()]  # an optional uploaded file (default None)
MARK = "__opt_patch__"  # set on every replacement function; its `__wrapped__` is BentoML's own


def refuse_file_urls(ensure_file):
    """MultipartSerde.ensure_file: file fields must be uploads, never URLs to fetch."""
    from starlette.datastructures import UploadFile

    async def uploads_only(obj):
        if isinstance(obj, UploadFile):
            return obj
        raise BentoMLException(
            "file fields must be uploaded files (URLs are not fetched)", error_code=HTTPStatus.BAD_REQUEST
        )

    return uploads_only


def bad_multipart_is_4xx(parse_request):
    """MultipartSerde.parse_request: Starlette's HTTPException (a malformed body) -> its own 4xx;
    a field that is not valid text -> 400."""
    from starlette.exceptions import HTTPException

    async def parse_or_4xx(self, request, cls):
        try:
            return await parse_request(self, request, cls)
        except HTTPException as e:
            raise BentoMLException(f"bad multipart body: {e.detail}", error_code=HTTPStatus(e.status_code)) from e
        except UnicodeDecodeError as e:
            raise BentoMLException(
                f"bad multipart body: a form field is not valid {e.encoding} text", error_code=HTTPStatus.BAD_REQUEST
            ) from e

    return parse_or_4xx


def error_object(json_response):
    """_bentoml_impl.server.app.JSONResponse: the content ({"error": ...},) -> {"error": ...}."""

    class ErrorObject(json_response):
        def render(self, content) -> bytes:
            if isinstance(content, tuple) and len(content) == 1 and isinstance(content[0], dict):
                content = content[0]
            return super().render(content)

    return ErrorObject


def refused_is_one_line(log_exception):
    """_bentoml_impl.server.app.log_exception: a 4xx (BentoML's error code or a pydantic
    ValidationError) -> one INFO line with its reason; anything else as BentoML logs it."""
    import logging
    import sys

    from pydantic import ValidationError

    from opt.serving.inputs import validation_reason

    logger = logging.getLogger("bentoml.serve")

    def log(request, exc_info=True):
        error = sys.exc_info()[1]
        status = 400 if isinstance(error, ValidationError) else int(getattr(error, "error_code", 500))
        if not 400 <= status < 500:
            return log_exception(request, exc_info)
        reason = validation_reason(error) if isinstance(error, ValidationError) else str(error)
        logger.info("refused %s %s (%d): %s", request.method, request.url.path, status, reason)

    return log


def service_info(generate_spec):
    """_bentoml_sdk.service.openapi.generate_spec: info from `svc.inner.openapi_info()` when the class has one."""
    import attr
    from bentoml._internal.service.openapi.specification import Info

    def spec(svc, *args, **kwargs):
        out = generate_spec(svc, *args, **kwargs)
        info = getattr(svc.inner, "openapi_info", None)
        return out if info is None else attr.evolve(out, info=Info(**info()))

    return spec


def json_body_documented(openapi_request):
    """APIMethod.openapi_request: with only optional file inputs, a JSON body (the other inputs) too."""
    import attr
    from bentoml._internal.service.openapi.specification import MediaType

    def request(self) -> dict:
        out = openapi_request(self)
        spec, files = self.input_spec, set(self.input_spec.multipart_fields)
        form = out["content"].get("multipart/form-data")
        if form is None or any(spec.model_fields[f].is_required() for f in files):
            return out
        fields = {k: v for k, v in (form.schema.properties or {}).items() if k not in files}
        required = [f for f in form.schema.required or [] if f not in files] or None
        schema = attr.evolve(form.schema, properties=fields, required=required)
        return {**out, "content": {"application/json": MediaType(schema=schema), **out["content"]}}

    return request


def strict_text(user_safe_decode):
    """starlette.formparsers._user_safe_decode: bytes that are not valid in the part's charset are
    refused (MultiPartException: Starlette's 400), never decoded as Latin-1."""
    from starlette.formparsers import MultiPartException

    def decode_or_refuse(src, codec: str) -> str:
        try:
            return bytes(src).decode(codec)
        except UnicodeDecodeError as e:
            raise MultiPartException(f"a form field is not valid {codec} text") from e
        except LookupError:  # an unknown charset: Starlette's own answer
            return user_safe_decode(src, codec)

    return decode_or_refuse


def patches() -> list[tuple[object, str, object]]:
    """(class or module, attribute, replacement maker) of every patch; the maker takes the original function."""
    import importlib

    import _bentoml_impl.server.app as server_app
    import starlette.formparsers
    from _bentoml_impl.serde import MultipartSerde
    from _bentoml_sdk.method import APIMethod

    openapi = importlib.import_module("_bentoml_sdk.service.openapi")  # `_bentoml_sdk.service` is also a function

    return [
        (MultipartSerde, "ensure_file", refuse_file_urls),
        (MultipartSerde, "parse_request", bad_multipart_is_4xx),
        (server_app, "JSONResponse", error_object),
        (server_app, "log_exception", refused_is_one_line),
        (openapi, "generate_spec", service_info),
        (APIMethod, "openapi_request", json_body_documented),
        (starlette.formparsers, "_user_safe_decode", strict_text),
    ]


def _function(owner, name: str):
    """owner.name as a plain function (a staticmethod unwrapped) and whether it was a staticmethod."""
    value = owner.__dict__[name]
    return (value.__func__, True) if isinstance(value, staticmethod) else (value, False)


def original(owner, name: str):
    """BentoML's own function behind owner.name, patched or not."""
    function, _ = _function(owner, name)
    return function.__wrapped__ if getattr(function, MARK, False) else function


def is_patched(owner, name: str) -> bool:
    return bool(getattr(_function(owner, name)[0], MARK, False))


def apply_patches() -> None:
    """Apply every patch not yet applied in this process (idempotent)."""
    for owner, name, make in patches():
        if is_patched(owner, name):
            continue
        function, static = _function(owner, name)
        replacement = make(function)
        replacement.__wrapped__ = function
        setattr(replacement, MARK, True)
        setattr(owner, name, staticmethod(replacement) if static else replacement)


def remove_patches() -> None:
    """Put BentoML's own functions back (for tests)."""
    for owner, name, _ in patches():
        if is_patched(owner, name):
            _, static = _function(owner, name)
            function = original(owner, name)
            setattr(owner, name, staticmethod(function) if static else function)


def patched() -> dict[str, bool]:
    """Class.attribute (module.attribute) -> whether its patch is applied in this process."""
    return {f"{owner.__name__}.{name}": is_patched(owner, name) for owner, name, _ in patches()}


def adaptive_batcher(function, max_batch_size: int, max_latency_ms: int, executor=None):
    """BentoML's adaptive batching (the CorkDispatcher behind its batchable APIs) inside this process.

    `function(items: list) -> sequence` runs in `executor` (a thread pool; None: asyncio's default)
    on the items of concurrent calls; returns `async call(item) -> output` (one item in, its own
    output out). A call that would wait over `max_latency_ms` is refused with a 503, as BentoML's
    batchable APIs do; an exception of `function` is raised in every call of its batch; a call
    cancelled by its caller (e.g. BentoML's request timeout) stays cancelled.
    """
    import asyncio

    from bentoml._internal.marshal.dispatcher import CorkDispatcher
    from bentoml.exceptions import ServiceUnavailable

    if int(max_batch_size) < 1 or int(max_latency_ms) < 1:
        raise ValueError(
            f"adaptive batching needs max_batch_size >= 1 and max_latency_ms >= 1, "
            f"got {max_batch_size} and {max_latency_ms}"
        )

    def overloaded():
        raise ServiceUnavailable("the model is overloaded: the request waited too long for a batch")

    async def run(items):
        return list(await asyncio.get_running_loop().run_in_executor(executor, function, list(items)))

    dispatched = CorkDispatcher(
        max_latency_in_ms=int(max_latency_ms),
        max_batch_size=int(max_batch_size),
        fallback=overloaded,
        get_batch_size=lambda item: 1,
    )(run)

    async def call(item):
        try:
            return await dispatched(item)
        except ServiceUnavailable:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the dispatcher turns any cancellation into a 503
                raise asyncio.CancelledError() from None
            raise

    return call


def swagger_page(title: str) -> str:
    """BentoML's Swagger page (main-openapi.html) titled `title`, without Google Tag Manager."""
    import html
    import re

    import _bentoml_impl.server.app as server_app

    page = (Path(server_app.__file__).parent / "main-openapi.html").read_text()
    page = re.sub(r"<!-- Google Tag Manager.*?<!-- End Google Tag Manager[^>]*-->", "", page, flags=re.S)
    shown = "<style>.info .main .title { visibility: visible; } .info .main .title span { position: static; }</style>"
    page = page.replace("</head>", f"{shown}</head>", 1)  # after BentoML's index.css, which hides it
    return re.sub(r"<title>.*?</title>", f"<title>{html.escape(title)}</title>", page, count=1)


class SwaggerPage:
    """ASGI middleware: GET / -> swagger_page(title); everything else passes through."""

    def __init__(self, app, title: str):
        from starlette.responses import HTMLResponse

        self.app, self.page = app, HTMLResponse(swagger_page(title))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            return await self.page(scope, receive, send)
        return await self.app(scope, receive, send)
