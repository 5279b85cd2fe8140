"""The BentoML service: `OPTService` (public HTTP API) in front of `OPTModel` (the model).

OPTService checks and decodes every input (opt.serving.inputs), turns bad input into a 4xx and
binds to serve.host (127.0.0.1) unless `bentoml serve --host` says otherwise. OPTModel holds the
packaged model (opt.serving.runtime) in its own process; its APIs are batchable, so BentoML's
adaptive batching groups concurrent requests (serve.batching). The model is `opt:latest` of the
store, or `--arg model=opt:VERSION` (a Bento built by `opt package` pins its own).

    bentoml serve opt.serving.service:OPTService      # from the project
    bentoml serve opt_service:latest                   # the Bento
"""
from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import Field

from opt.config import ServeConfig
from opt.data.dataset import read_params
from opt.serving import outputs
from opt.serving.bentoml_compat import call_with_retry, patch_bentoml
from opt.serving.bundle import read_bundle
from opt.serving.inputs import AudioFeatures, BadInput, BodySizeLimit, Limits, decode, query_kind

MODEL_TAG = getattr(bentoml.use_arguments(), "model", None) or os.environ.get("OPT_SERVE_MODEL", "opt:latest")
MODEL = bentoml.models.BentoModel(MODEL_TAG)


def packaged_settings():
    """The packaged model's `serve` config (limits, batching, host); defaults when no model is stored."""
    stored = MODEL.stored
    return read_bundle(Path(stored.path))[0].serve if stored is not None else ServeConfig()


SERVE = packaged_settings()
BATCHED = {"batchable": True, "max_batch_size": int(SERVE.batching.max_batch_size),
           "max_latency_ms": int(SERVE.batching.max_latency_ms)}


@bentoml.service(workers=int(SERVE.workers), traffic={"timeout": int(SERVE.timeout)})
class OPTModel:
    """The packaged model; every API takes a batch (a list or an array with the batch first)."""

    bundle = MODEL

    def __init__(self) -> None:
        import torch

        from opt.serving.runtime import Runtime

        if int(SERVE.torch_threads) > 0:
            torch.set_num_threads(int(SERVE.torch_threads))
        self.runtime = Runtime(self.bundle.path)
        self.steps = int(SERVE.limits.max_generate_tokens)

    @bentoml.api(**BATCHED)
    def caption(self, images: np.ndarray) -> list[str]:
        return self.runtime.caption(images, self.steps)

    @bentoml.api(**BATCHED)
    def transcribe(self, mels: list[Any]) -> list[str]:
        return self.runtime.transcribe(mels, self.steps)

    @bentoml.api(**BATCHED)
    def generate_image(self, prompts: list[str]) -> np.ndarray:
        return self.runtime.generate_images(prompts)

    @bentoml.api(**BATCHED)
    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.runtime.embed("text", texts)

    @bentoml.api(**BATCHED)
    def embed_image(self, images: np.ndarray) -> np.ndarray:
        return self.runtime.embed("image", images)

    @bentoml.api(**BATCHED)
    def embed_audio(self, mels: list[Any]) -> np.ndarray:
        return self.runtime.embed("audio", mels)

    @bentoml.api(**BATCHED)
    def embed_text_audio(self, pairs: list[Any]) -> np.ndarray:
        return self.runtime.embed_text_audio(pairs)

    @bentoml.api(**BATCHED)
    def classify(self, images: np.ndarray) -> np.ndarray:
        return self.runtime.classify(images)

    @bentoml.api(**BATCHED)
    def vqa(self, pairs: list[Any]) -> list[dict]:
        return self.runtime.answer(pairs)

    @bentoml.api
    def gallery(self) -> dict:
        """Gallery items and modality -> (N,D) embeddings, fetched once by OPTService."""
        rt = self.runtime
        return {"items": rt.gallery_items, "embeddings": {k: v.numpy() for k, v in rt.gallery.items()},
                "labels": rt.labels, "dim": rt.dim, "image_size": rt.image_size, "finetuned": rt.info["finetuned"]}


@contextlib.contextmanager
def as_http_error():
    """BadInput -> a BentoML error with the input's 4xx status and its message."""
    try:
        yield
    except BadInput as e:
        raise BentoMLException(str(e), error_code=e.status) from e


patch_bentoml()
Target = Literal["image", "text", "audio"]


@bentoml.service(http={"host": str(SERVE.host), "port": int(SERVE.port)}, traffic={"timeout": int(SERVE.timeout)})
class OPTService:
    """OPT over HTTP: caption, transcribe, generate_image, retrieve, classify, vqa, embed, health."""

    bundle = MODEL
    model = bentoml.depends(OPTModel)

    def __init__(self) -> None:
        cfg, self.info = read_bundle(Path(self.bundle.path))
        self.limits = Limits.from_config(cfg.serve.limits)
        params = read_params(Path(cfg.paths.root) / cfg.paths.prepared)
        self.audio, self.image_size = AudioFeatures(params, self.limits), int(params["image"]["size"])
        self._gallery: dict | None = None

    async def decode(self, kind: str, value):
        """One input -> model-ready array, off the event loop; bad input -> 4xx."""
        with as_http_error():
            return await asyncio.to_thread(decode, kind, value, self.image_size, self.audio, self.limits)

    @bentoml.api
    async def caption(self, image: Path) -> outputs.Caption:
        """Image (PNG or JPEG, any mode) -> a caption."""
        x = await self.decode("image", image)
        return outputs.Caption(caption=(await self.call("caption", x[None]))[0])

    @bentoml.api
    async def transcribe(self, audio: Path) -> outputs.Transcript:
        """Speech (WAV, OGG or FLAC, any rate) -> its transcript."""
        mel = await self.decode("audio", audio)
        return outputs.Transcript(text=(await self.call("transcribe", [mel]))[0])

    @bentoml.api
    async def generate_image(self, prompt: str) -> Annotated[bytes, ContentType("image/png")]:
        """Text -> a generated image, PNG bytes."""
        text = await self.decode("text", prompt)
        return outputs.png_bytes((await self.call("generate_image", [text]))[0])

    @bentoml.api
    async def retrieve(self, text: Optional[str] = None, audio: Optional[Path] = None, image: Optional[Path] = None,
                       target: Optional[Target] = None,
                       k: Annotated[int, Field(ge=1)] = int(SERVE.top_k)) -> outputs.Retrieved:
        """A text, audio, text+audio or image query -> the top-k gallery items of `target` with scores."""
        kind, vector = await self.query_vector(text, audio, image)
        gallery = await self.gallery()
        with as_http_error():
            return outputs.retrieved(gallery, kind, vector, target, k, self.limits)

    @bentoml.api
    async def classify(self, image: Path, threshold: Annotated[float, Field(ge=0, le=1)] = 0.5) -> outputs.Classified:
        """Image -> every scene label with its probability; `predicted` holds those >= threshold."""
        x = await self.decode("image", image)
        probs = (await self.call("classify", x[None]))[0]
        return outputs.classified((await self.gallery())["labels"], probs, threshold)

    @bentoml.api
    async def vqa(self, image: Path, question: str) -> outputs.Answer:
        """Image + question -> an answer with its probability."""
        x, q = await self.decode("image", image), await self.decode("text", question)
        return outputs.Answer(**(await self.call("vqa", [(x, q)]))[0])

    @bentoml.api
    async def embed(self, text: Optional[str] = None, audio: Optional[Path] = None,
                    image: Optional[Path] = None) -> outputs.Embedding:
        """Text, audio, text+audio or image -> a unit vector of the model width (retrieval's space)."""
        kind, vector = await self.query_vector(text, audio, image)
        return outputs.Embedding(modality=kind, dim=len(vector), embedding=outputs.finite_list(vector))

    @bentoml.api(route="/health")
    async def health(self) -> outputs.Health:
        """The packaged model, its fine-tuned tasks and gallery size (GET /readyz is BentoML's own probe)."""
        gallery = await self.gallery()
        return outputs.Health(status="ok", model=str(self.bundle.tag), finetuned=gallery["finetuned"],
                              gallery_items=len(gallery["items"]), dim=gallery["dim"])

    async def call(self, name: str, *batch):
        """One call of the model service (a batch of one request), retried once on a dropped connection."""
        return await call_with_retry(self.model.to_async, name, *batch)

    async def gallery(self) -> dict:
        if self._gallery is None:
            self._gallery = outputs.gallery_tensors(await self.call("gallery"))
        return self._gallery

    async def query_vector(self, text, audio, image) -> tuple[str, np.ndarray]:
        """Exactly one of text, audio, image, or text with audio -> (kind, unit vector (D,))."""
        with as_http_error():
            kind = query_kind(text, audio, image)
        if kind == "text_audio":
            pair = (await self.decode("text", text), await self.decode("audio", audio))
            return kind, (await self.call("embed_text_audio", [pair]))[0]
        value = await self.decode(kind, {"text": text, "audio": audio, "image": image}[kind])
        return kind, (await self.call(f"embed_{kind}", value[None] if kind == "image" else [value]))[0]


OPTService.add_asgi_middleware(BodySizeLimit, max_bytes=int(SERVE.limits.max_upload_bytes))
