"""The packaged model in-process: load a bundle (opt.serving.bundle), run each capability.

The BentoML service runs these methods through adaptive batching, and benchmarks/serve_load.py calls
them directly. Inputs are already decoded and checked (opt.serving.inputs): images (B,3,S,S)
float in [0,1], log-mel (M,F) normalised with the train statistics, texts as str. Each task
runs on its own fine-tuned weights (the pre-trained model with fresh heads where a task was
not fine-tuned). Retrieval searches a gallery embedded once at start-up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from opt.artifacts import load_vq, training_split
from opt.data.dataset import read_params
from opt.data.questions import Question
from opt.data.splits import mel_normalisation
from opt.model.encoders import Modality
from opt.serving.bundle import read_bundle
from opt.tasks import TASK_NAMES, get_task
from opt.tasks.base import TaskContext, text_batch
from opt.tasks.captioning import TextDecoding, generate_captions, to_uint8
from opt.tasks.retrieval import Retrieval, fused_query
from opt.tasks.run import load_task_model
from opt.tasks.text_to_image import ImageSampling, images_from_text

T, I, A = Modality.TEXT, Modality.IMAGE, Modality.AUDIO


class Runtime:
    """Every fine-tuned task model of one bundle, ready for inference on `device`."""

    def __init__(self, root: Path | str, device: str = "cpu"):
        self.cfg, self.info = read_bundle(Path(root))
        self.device = torch.device(device)
        self.context = TaskContext(self.cfg, self.device)
        self.decoding = TextDecoding.from_config(self.cfg.task)
        self.tokenizer = self.context.tokenizer
        self.tasks, self.models = {}, {}
        for name in TASK_NAMES:
            self.tasks[name] = get_task(name)  # its state (vocabularies) comes with its saved model
            self.models[name] = load_task_model(self.cfg, self.tasks[name], self.context)
        self.vq = load_vq(self.cfg).to(self.device)
        self.labels: list[str] = list(self.tasks["classification"].vocab)
        self.params = read_params(Path(self.cfg.paths.root) / self.cfg.paths.prepared)
        mean, std = mel_normalisation(self.params)
        self.mel_pad = (float(self.params["mel"]["pad_value"]) - mean) / std  # (M,1) normalised silence
        self.image_size = int(self.params["image"]["size"])
        self.dim = int(self.models["retrieval"].opt.cfg.dim)
        self.gallery_items, self.gallery = self.build_gallery()

    def build_gallery(self) -> tuple[list[dict], dict[str, torch.Tensor]]:
        """Items (index, image_id, caption) of the gallery split, and modality -> (N,D) unit embeddings."""
        data = training_split(self.cfg, self.info["gallery"]["split"], with_codes=False)
        model = self.models["retrieval"]
        emb = Retrieval().split_embeddings(model.opt, model.heads, data, self.device)
        items = [
            {"index": i, "image_id": r.get("image_id"), "caption": r.get("caption")}
            for i, r in enumerate(data.records())
        ]
        self.gallery_split = data.items
        return items, {m.value: emb[m] for m in Modality}

    def gallery_image(self, index: int) -> np.ndarray:
        """(S,S,3) uint8 picture of gallery item `index`, as prepared (the demo page's thumbnails)."""
        shard, row = self.gallery_split.locate(int(index))
        return np.asarray(self.gallery_split.arrays(shard)["images"][row]).transpose(1, 2, 0)

    # ---- batches -------------------------------------------------------------------------
    def text_batch(self, texts: list[str], trim: bool = True) -> dict:
        """Texts -> tokens (B,L') trimmed to the longest (else (B,L) of the tokenizer), token_count (B,)."""
        return text_batch(self.tokenizer, texts, self.device, trim)

    def mel_batch(self, mels: list) -> dict:
        """Normalised log-mels (M,F_i) -> mel (B,M,F_max) padded with normalised silence, mel_frames (B,)."""
        mels = [torch.as_tensor(m, dtype=torch.float32) for m in mels]
        frames = torch.tensor([m.shape[1] for m in mels])
        out = self.mel_pad.expand(-1, int(frames.max())).repeat(len(mels), 1, 1)  # (B,M,F_max)
        for b, m in enumerate(mels):
            out[b, :, : m.shape[1]] = m
        return {"mel": out.to(self.device), "mel_frames": frames.to(self.device)}

    def image_batch(self, images) -> dict:
        return {"image": torch.as_tensor(np.asarray(images), dtype=torch.float32).to(self.device)}

    # ---- capabilities ------------------------------------------------------------------------
    @torch.no_grad()
    def caption(self, images, steps: int | None = None) -> list[str]:
        """(B,3,S,S) -> B captions (beam search as configured, KV cache)."""
        model = self.models["captioning"].opt
        steps = min(steps or model.text_decoder.length, model.text_decoder.length, self.tokenizer.max_length)
        return generate_captions(model, self.image_batch(images), (I,), self.tokenizer, steps, self.decoding)

    @torch.no_grad()
    def transcribe(self, mels: list, steps: int | None = None) -> list[str]:
        """B normalised log-mels (M,F) -> B transcripts."""
        model = self.models["speech_recognition"].opt
        steps = min(steps or model.text_decoder.length, model.text_decoder.length, self.tokenizer.max_length)
        return generate_captions(model, self.mel_batch(mels), (A,), self.tokenizer, steps, self.decoding)

    @torch.no_grad()
    def generate_images(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        """B prompts -> (B,S,S,3) uint8 images (image decoder -> sampled VQ codes -> VQ decoder).
        Each prompt's codes are drawn from its own seed and its text is not trimmed to the batch's
        longest, so one (prompt, seed) gives one image in any batch (exactly so on CPU with one
        intra-op thread, serve.torch_threads: 1; more threads may round differently by batch size)."""
        generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        images = images_from_text(
            self.models["text_to_image"].opt,
            self.vq,
            self.text_batch(prompts, trim=False),
            ImageSampling.from_config(self.cfg.task),
            generators,
            trim=False,
        )
        return np.stack([to_uint8(im) for im in images])

    @torch.no_grad()
    def embed(self, modality: str, inputs) -> np.ndarray:
        """Unit embeddings (B,D) of texts, images (B,3,S,S) or log-mels, as retrieval compares them."""
        model = self.models["retrieval"].opt
        m = Modality(modality)
        batch = {T: self.text_batch, I: self.image_batch, A: self.mel_batch}[m](inputs)
        return model.embed(model.encode(batch, (m,))[m], m).cpu().numpy()

    @torch.no_grad()
    def embed_text_audio(self, pairs: list) -> np.ndarray:
        """(text, log-mel) pairs -> (B,D) fused queries through the cross-modal encoder."""
        task_model = self.models["retrieval"]
        batch = {**self.text_batch([t for t, _ in pairs]), **self.mel_batch([m for _, m in pairs])}
        return fused_query(task_model.opt, task_model.heads, task_model.opt.encode(batch, (T, A))).cpu().numpy()

    @torch.no_grad()
    def classify(self, images) -> np.ndarray:
        """(B,3,S,S) -> (B,C) probabilities of each label in `self.labels`."""
        task_model = self.models["classification"]
        encoded = task_model.opt.encode(self.image_batch(images), (I,))[I]
        return torch.sigmoid(task_model.heads["image"](task_model.opt.summary(encoded, I)).float()).cpu().numpy()

    @torch.no_grad()
    def answer(self, pairs: list) -> list[dict]:
        """(image (3,S,S), question) pairs -> {"answer", "score"} each."""
        task, task_model = self.tasks["vqa"], self.models["vqa"]
        images = self.image_batch(np.stack([np.asarray(im) for im, _ in pairs]))
        questions = [Question("", q, "") for _, q in pairs]
        logits = task.answer_logits(
            task_model.opt, task_model.heads, images, questions, list(range(len(pairs))), self.context
        )
        probs = torch.softmax(logits, dim=-1)
        best = probs.max(dim=-1)
        return [{"answer": task.answers[int(k)], "score": float(p)} for p, k in zip(best.values, best.indices)]


def search(gallery: dict, items: list[dict], queries: np.ndarray, target: str, k: int) -> list[list[dict]]:
    """(B,D) unit queries against the gallery's `target` embeddings -> per query the top-k items with scores."""
    keys = gallery[target]
    scores = torch.as_tensor(np.asarray(queries), dtype=torch.float32) @ keys.t()  # (B,N)
    top = scores.topk(min(int(k), keys.shape[0]), dim=-1)
    return [
        [{**items[int(j)], "score": float(s)} for s, j in zip(values, indices)]
        for values, indices in zip(top.values, top.indices)
    ]


# query kind -> the gallery modality searched when the request names none
DEFAULT_TARGETS = {"text": "image", "audio": "image", "image": "text", "text_audio": "image"}
