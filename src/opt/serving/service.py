"""The BentoML service `OPTService`: the packaged model behind a public HTTP API, in one process.

Every input is checked and decoded (opt.serving.inputs) off the event loop; bad input becomes a
4xx. The model (opt.serving.runtime) lives in the same process: each capability goes through
BentoML's adaptive batching dispatcher (serve.batching), which groups concurrent requests into
one batch while each request keeps its own HTTP answer. No second service, so no second HTTP
hop (it cost ~8 ms a request).

    bentoml serve opt.serving.service:OPTService      # from the project
    bentoml serve opt_service:latest                   # the Bento

Importing this module reads no model and patches nothing: `bundle` is a reference to the model
(`opt:latest` of the store, `OPT_SERVE_MODEL`, or `--arg model=opt:VERSION`; a Bento built by
`opt package` pins its own), which `bentoml build` records in the Bento. Constructing
`OPTService` (in each worker process) applies the BentoML patches (opt.serving.bentoml_compat),
then loads the model and its `serve` settings: limits, batching, torch_threads, top_k. The body
size limit (serve.limits.max_upload_bytes) is taken from the constructed service on the first
request. The server's own settings (workers, host, port, timeout) are read by BentoML before any
worker exists, so they are Bento arguments with ServeConfig's defaults: `--arg workers=2`, or
BentoML's config (BENTOML_CONFIG_OPTIONS="services.OPTService.workers=2"); `bentoml serve --host`
and `--port` override host and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Literal

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import BaseModel, Field

from opt.config import ServeConfig
from opt.serving import demo, outputs
from opt.serving.bentoml_compat import OptionalFile, SwaggerPage, adaptive_batcher, apply_patches
from opt.serving.bundle import read_bundle
from opt.serving.inputs import AudioFeatures, BadInput, BodySizeLimit, decode, limits_from_config, query_kind


class ServeArgs(BaseModel):
    """Bento arguments (`bentoml serve --arg key=value`; a Bento keeps those it was built with)."""

    model: str = Field(default_factory=lambda: os.environ.get("OPT_SERVE_MODEL", "opt:latest"))  # model tag
    workers: int = Field(ServeConfig.workers, ge=1)  # service processes (each holds the model)
    host: str = ServeConfig.host
    port: int = ServeConfig.port
    timeout: int = Field(ServeConfig.timeout, ge=1)  # seconds per request


ARGS = bentoml.use_arguments(ServeArgs)
MODEL_TAG = ARGS.model
TITLE = "OPT service"  # the Swagger page's


@contextlib.contextmanager
def as_http_error():
    """BadInput -> a BentoML error with the input's 4xx status and its message."""
    try:
        yield
    except BadInput as e:
        raise BentoMLException(str(e), error_code=e.status) from e


class UploadLimit:
    """ASGI middleware: BodySizeLimit (413 before the body is read) at the served model's
    serve.limits.max_upload_bytes, known once BentoML has constructed the service."""

    def __init__(self, app):
        self.app, self.limited = app, None

    async def __call__(self, scope, receive, send):
        if self.limited is None:
            try:
                service = bentoml.get_current_service()
            except BentoMLException:  # not constructed yet: the app's start-up, before any request
                return await self.app(scope, receive, send)
            self.limited = BodySizeLimit(self.app, service.limits.max_upload_bytes)
        return await self.limited(scope, receive, send)


Target = Literal["image", "text", "audio"]


@bentoml.service(
    workers=ARGS.workers,
    http={"host": ARGS.host, "port": ARGS.port},
    traffic={"timeout": ARGS.timeout},
)
class OPTService:
    """OPT over HTTP: caption, transcribe, generate_image, retrieve, classify, vqa, embed, health."""

    bundle = bentoml.models.BentoModel(MODEL_TAG)  # a reference: resolved (store lookup) on first instance access

    def __init__(self) -> None:
        import torch

        from opt.serving.runtime import Runtime

        apply_patches()
        root = Path(self.bundle.path)
        serve = read_bundle(root)[0].serve  # the packaged model's settings
        if int(serve.torch_threads) > 0:
            torch.set_num_threads(int(serve.torch_threads))
        rt = self.runtime = Runtime(root)
        self.top_k = int(serve.top_k)
        self.limits = limits_from_config(serve.limits)
        self.audio, self.image_size = AudioFeatures(rt.params, self.limits), rt.image_size
        self.gallery = {"items": rt.gallery_items, "embeddings": rt.gallery}
        steps = self.limits.max_generate_tokens
        batches = {  # capability -> function of a list of decoded inputs, returning one output per input
            "caption": lambda images: rt.caption(np.stack(images), steps),
            "transcribe": lambda mels: rt.transcribe(mels, steps),
            "generate_image": lambda requests: rt.generate_images(*zip(*requests)),  # (prompt, seed) each
            "embed_text": lambda texts: rt.embed("text", texts),
            "embed_image": lambda images: rt.embed("image", np.stack(images)),
            "embed_audio": lambda mels: rt.embed("audio", mels),
            "embed_text_audio": rt.embed_text_audio,
            "classify": lambda images: rt.classify(np.stack(images)),
            "vqa": rt.answer,
        }
        # one model batch at a time per process (as a batchable BentoML API runs); decoding keeps its own threads
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="opt-model")
        self.batched = {
            name: adaptive_batcher(fn, serve.batching.max_batch_size, serve.batching.max_latency_ms, self.model_thread)
            for name, fn in batches.items()
        }

    @staticmethod
    def openapi_info() -> dict:
        """The Swagger page's title, version and description: this service and the model it serves."""
        try:
            model = str(bentoml.get_current_service().bundle.tag)
        except BentoMLException:  # not constructed (e.g. `bentoml build`): the reference
            model = MODEL_TAG
        return {
            "title": TITLE,
            "version": model.partition(":")[2] or model,
            "description": (
                "OPT, the Omni-Perception Pre-Trainer: one model over text, images and audio. "
                f"Serving the packaged model `{model}`.\n\n"
                "Captions, transcripts, generated images, gallery retrieval (text, audio, text+audio or "
                "image queries), scene labels, answers to questions and embeddings. Files go as multipart "
                "form fields; `/generate_image`, `/retrieve` and `/embed` also take a JSON body. "
                "A page for people: [/ui](ui)."
            ),
        }

    async def decode(self, kind: str, value):
        """One input -> model-ready value (files decoded off the event loop); bad input -> 4xx."""
        args = (kind, value, self.image_size, self.audio, self.limits)
        with as_http_error():
            if kind == "text":  # a bounded string check: cheaper than a thread hop
                return decode(*args)
            return await asyncio.to_thread(decode, *args)

    @bentoml.api
    async def caption(self, image: Path) -> outputs.Caption:
        """Image (PNG or JPEG, any mode) -> a caption."""
        x = await self.decode("image", image)
        return outputs.Caption(caption=await self.call("caption", x))

    @bentoml.api
    async def transcribe(self, audio: Path) -> outputs.Transcript:
        """Speech (WAV, OGG or FLAC, any rate) -> its transcript."""
        mel = await self.decode("audio", audio)
        return outputs.Transcript(text=await self.call("transcribe", mel))

    @bentoml.api
    async def generate_image(
        self, prompt: str, seed: Annotated[int | None, Field(ge=0, le=2**63 - 1)] = None
    ) -> Annotated[bytes, ContentType("image/png")]:
        """Text -> a generated image, PNG bytes; one prompt with one `seed` always gives one image
        (no seed: a fresh draw each call)."""
        text = await self.decode("text", prompt)
        seed = secrets.randbits(63) if seed is None else seed
        return outputs.png_bytes(await self.call("generate_image", (text, seed)))

    @bentoml.api
    async def retrieve(
        self,
        text: str | None = None,
        audio: OptionalFile = None,
        image: OptionalFile = None,
        target: Target | None = None,
        k: Annotated[int | None, Field(ge=1)] = None,
    ) -> outputs.Retrieved:
        """A text, audio, text+audio or image query -> the top-k gallery items of `target` with scores
        (k: the model's serve.top_k when not given)."""
        kind, vector = await self.query_vector(text, audio, image)
        with as_http_error():
            return outputs.retrieved(self.gallery, kind, vector, target, self.top_k if k is None else k, self.limits)

    @bentoml.api
    async def classify(self, image: Path, threshold: Annotated[float, Field(ge=0, le=1)] = 0.5) -> outputs.Classified:
        """Image -> every scene label with its probability; `predicted` holds those >= threshold."""
        x = await self.decode("image", image)
        probs = await self.call("classify", x)
        return outputs.classified(self.runtime.labels, probs, threshold)

    @bentoml.api
    async def vqa(self, image: Path, question: str) -> outputs.Answer:
        """Image + question -> an answer with its probability."""
        x, q = await self.decode("image", image), await self.decode("text", question)
        return outputs.Answer(**await self.call("vqa", (x, q)))

    @bentoml.api
    async def embed(
        self, text: str | None = None, audio: OptionalFile = None, image: OptionalFile = None
    ) -> outputs.Embedding:
        """Text, audio, text+audio or image -> a unit vector of the model width (retrieval's space)."""
        kind, vector = await self.query_vector(text, audio, image)
        return outputs.Embedding(modality=kind, dim=len(vector), embedding=outputs.finite_list(vector))

    @bentoml.api(route="/health")
    async def health(self) -> outputs.Health:
        """The packaged model, its fine-tuned tasks and gallery size (GET /readyz is BentoML's own probe)."""
        rt = self.runtime
        return outputs.Health(
            status="ok",
            model=str(self.bundle.tag),
            finetuned=rt.info["finetuned"],
            gallery_items=len(rt.gallery_items),
            dim=rt.dim,
        )

    async def call(self, name: str, value):
        """One decoded input through the capability's adaptive batcher -> its output."""
        return await self.batched[name](value)

    async def query_vector(self, text, audio, image) -> tuple[str, np.ndarray]:
        """Exactly one of text, audio, image, or text with audio -> (kind, unit vector (D,))."""
        with as_http_error():
            kind = query_kind(text, audio, image)
        if kind == "text_audio":
            pair = (await self.decode("text", text), await self.decode("audio", audio))
            return kind, await self.call("embed_text_audio", pair)
        value = await self.decode(kind, {"text": text, "audio": audio, "image": image}[kind])
        return kind, await self.call(f"embed_{kind}", value)


OPTService.add_asgi_middleware(UploadLimit)
OPTService.add_asgi_middleware(SwaggerPage, title=TITLE)
OPTService.mount_asgi_app(demo.page_app(), path=demo.PATH, name="demo")  # the demo page, same process
