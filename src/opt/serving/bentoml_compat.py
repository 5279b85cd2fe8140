"""Work-arounds for BentoML 1.4.40 defects met by the service, each applied once at import, and
BentoML's adaptive batching dispatcher used in-process (`adaptive_batcher`).

- A multipart file field sent as text is fetched as a URL by BentoML (`MultipartSerde.ensure_file`):
  refused instead (nothing downloads at runtime, no SSRF).
- A malformed multipart body raises Starlette's HTTPException, which BentoML answers with a 500:
  answered with its own 4xx.
- `FileSchema` (the metadata of a Path input) is unhashable, so an optional file input
  (Optional[Path]: typing hashes Union members) cannot be declared: hashed by its fields.
"""

from __future__ import annotations

from http import HTTPStatus

from bentoml.exceptions import BentoMLException


def harden_multipart() -> None:
    """File fields must be uploads (never fetched); a malformed multipart body is a 4xx."""
    from _bentoml_impl.serde import MultipartSerde
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    async def ensure_file(obj):
        if isinstance(obj, UploadFile):
            return obj
        raise BentoMLException(
            "file fields must be uploaded files (URLs are not fetched)", error_code=HTTPStatus.BAD_REQUEST
        )

    parse = MultipartSerde.parse_request

    async def parse_request(self, request, cls):
        try:
            return await parse(self, request, cls)
        except HTTPException as e:
            raise BentoMLException(f"bad multipart body: {e.detail}", error_code=HTTPStatus(e.status_code)) from e

    MultipartSerde.ensure_file = staticmethod(ensure_file)
    MultipartSerde.parse_request = parse_request


def hashable_file_schema() -> None:
    """BentoML 1.4's FileSchema (the metadata of a Path input) is unhashable, which breaks an
    optional file input (Optional[Path]: typing hashes Union members); hash it by its fields."""
    from _bentoml_sdk.validators import FileSchema

    if FileSchema.__hash__ is None:
        FileSchema.__hash__ = lambda self: hash((type(self), self.format, self.content_type))


def patch_bentoml() -> None:
    """Apply the work-arounds (once per process)."""
    from _bentoml_impl.serde import MultipartSerde

    if not getattr(MultipartSerde, "_opt_patched", False):
        harden_multipart()
        hashable_file_schema()
        MultipartSerde._opt_patched = True


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
