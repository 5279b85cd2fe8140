"""Every use of BentoML's (and Starlette's) private modules by the service, in one place (BentoML 1.4.40).

Patches of BentoML defects, applied by `apply_patches()` when `OPTService` is constructed (once
per process; importing this module or the service patches nothing):

- `MultipartSerde.ensure_file`: a multipart file field sent as text is fetched as a URL by
  BentoML; refused instead with a 400 (nothing downloads at runtime, no SSRF).
- `MultipartSerde.parse_request`: a malformed multipart body raises Starlette's HTTPException,
  and a text field sent as a file part that is not UTF-8 a UnicodeDecodeError (json.loads of the
  bytes); BentoML answers both with a 500; answered with a 4xx.
- `starlette.formparsers._user_safe_decode`: a multipart text field (or field name, or file name)
  that is not valid in its charset (UTF-8 unless declared) is decoded as Latin-1, so mojibake
  reaches the model with a 200; refused instead (a 400 through the patch above).

A defect worked around without a patch: BentoML turns a `Path` input into an uploaded file only
when the annotation is `Path` or `typing.Optional[Path]` (which then fails: its `FileSchema` is
unhashable), not `Path | None`. `OptionalFile` declares an optional file input with the public
`FileSchema` itself.

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
    import starlette.formparsers
    from _bentoml_impl.serde import MultipartSerde

    return [
        (MultipartSerde, "ensure_file", refuse_file_urls),
        (MultipartSerde, "parse_request", bad_multipart_is_4xx),
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
