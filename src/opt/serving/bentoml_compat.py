"""Work-arounds for BentoML 1.4.40 defects met by the service, each applied once at import.

- A multipart file field sent as text is fetched as a URL by BentoML (`MultipartSerde.ensure_file`):
  refused instead (nothing downloads at runtime, no SSRF).
- A malformed multipart body raises Starlette's HTTPException, which BentoML answers with a 500:
  answered with its own 4xx.
- `FileSchema` (the metadata of a Path input) is unhashable, so an optional file input
  (Optional[Path]: typing hashes Union members) cannot be declared: hashed by its fields.
- The client of a dependency service refreshes its session every 100 calls, closing the
  connections of calls in flight, and a pooled connection can meet uvicorn's keep-alive
  timeout (BentoML #5540, #4971): no refresh, and one retry of the (pure) call.
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
        raise BentoMLException("file fields must be uploaded files (URLs are not fetched)",
                               error_code=HTTPStatus.BAD_REQUEST)

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


async def call_with_retry(client, name: str, *args):
    """`await client.<name>(*args)` on a dependency's async client, without session refreshes,
    retried once when its pooled connection dropped under the call."""
    import aiohttp

    manager = getattr(client, "_session_manager", None)
    if manager is not None:
        manager.max_requests, manager.max_age = 2**62, float("inf")
    try:
        return await getattr(client, name)(*args)
    except aiohttp.ClientConnectionError:
        return await getattr(client, name)(*args)
