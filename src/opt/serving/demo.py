"""The demo page: a Gradio UI at /ui of `OPTService`, in the same process as the API.

Every panel calls the service's own API methods: the inputs are first validated by the API's
input model (as BentoML validates an HTTP request), then the method decodes and checks them
(opt.serving.inputs) and runs the model through the same adaptive batchers. A refused input
shows the reason the API's 4xx would give; nothing else of an error reaches the page.

    bentoml serve opt.serving.service:OPTService    then open http://127.0.0.1:3000/ui

Panels: image -> caption, labels with scores, answer to a question; prompt (+ seed) -> image;
audio (upload or microphone) -> transcript; gallery search by text, audio, image or text+audio;
the packaged model's version, data version and headline metrics. The page needs nothing from the
internet: Gradio serves its own scripts and fonts, and analytics are off.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import bentoml
import gradio as gr
from bentoml.exceptions import BentoMLException
from PIL import Image
from pydantic import ValidationError

from opt.serving.inputs import validation_reason
from opt.tasks.metrics import HEADLINE

PATH = "/ui"  # where the service mounts the page
UNEXPECTED = "An unexpected error has occurred, please check the server log."  # BentoML's 5xx body
TARGETS = ["default", "image", "text", "audio"]  # retrieve's `target` ("default": by query kind)
log = logging.getLogger("bentoml.serve")  # beside the API's own lines


async def call_api(name: str, **inputs):
    """The running service's API `name` on `inputs` (None values left out, as an HTTP client
    would), validated by the API's input model; a refused input raises gr.Error with its reason."""
    service = bentoml.get_current_service()
    try:
        data = service.bento_service.apis[name].input_spec.model_validate(
            {k: v for k, v in inputs.items() if v is not None}
        )
        method = getattr(service, name).local  # the method itself, as BentoML's HTTP route calls it
        return await method(**{k: getattr(data, k) for k in type(data).model_fields})
    except ValidationError as e:
        reason, status = validation_reason(e), 400
    except BentoMLException as e:
        reason, status = str(e), int(e.error_code)
    except Exception:
        log.exception("page %s failed", name)
        reason, status = "", 500
    if status >= 500:  # what the API answers a 5xx with; the log has the rest
        log.warning("page %s: %d %s", name, status, reason)
        raise gr.Error(UNEXPECTED, print_exception=False)
    log.info("refused page %s (%d): %s", name, status, reason)
    raise gr.Error(reason, print_exception=False)


def upload(file) -> Path | None:
    """A Gradio file value (a path in Gradio's upload folder) as the API's file input."""
    return Path(file) if file else None


# ---- panels ---------------------------------------------------------------------------------------
async def describe(image, question: str, threshold: float):
    """Image -> (caption, {label: score}, predicted labels, answer, the image shown back)."""
    image = upload(image)
    caption, classified = await asyncio.gather(
        call_api("caption", image=image), call_api("classify", image=image, threshold=threshold)
    )
    answer = ""
    if question and question.strip():
        vqa = await call_api("vqa", image=image, question=question)
        answer = f"{vqa.answer} (p = {vqa.score:.2f})"
    scores = {lb.label: lb.score for lb in classified.labels}
    predicted = ", ".join(classified.predicted) or f"none at threshold {threshold:.2f}"
    return caption.caption, scores, predicted, answer, str(image)


async def generate(prompt: str, seed):
    """Prompt (+ optional seed) -> the generated picture."""
    png = await call_api("generate_image", prompt=prompt, seed=None if seed is None else int(seed))
    return Image.open(io.BytesIO(png))


async def transcribe(audio):
    """Speech file or recording -> its transcript."""
    return (await call_api("transcribe", audio=upload(audio))).text


async def search(text: str, audio, image, target: str, k: float):
    """A text, audio, text+audio or image query -> gallery thumbnails captioned with rank and score."""
    found = await call_api(
        "retrieve",
        text=text if text and text.strip() else None,
        audio=upload(audio),
        image=upload(image),
        target=None if target == "default" else target,
        k=int(k),
    )
    runtime = bentoml.get_current_service().runtime
    return [
        (runtime.gallery_image(item.index), f"#{item.rank}  {item.score:.3f}  {item.caption or ''}")
        for item in found.items
    ]


def model_card() -> str:
    """The packaged model's version, data version and headline test metrics (its metadata), as Markdown."""
    service = bentoml.get_current_service()
    meta = service.bundle.info.metadata
    rows = [
        f"| {task} | {metric} | {value:.3f} |"
        for task, metrics in HEADLINE.items()
        for metric in metrics
        if isinstance(value := meta.get("metrics", {}).get(task, {}).get("test", {}).get(metric), int | float)
    ]
    return "\n".join(
        [
            f"**Model** `{service.bundle.tag}` (run `{meta.get('candidate', '?')}`, git `{meta.get('git_revision', '?')}`)  ",
            f"**Data version** `{meta.get('data_version', '?')}`  ",
            f"**Chosen by** `{meta.get('metric', '?')}` = {meta.get('metric_value', float('nan')):.3f}",
            "",
            "| task | metric (test) | value |",
            "|---|---|---:|",
            *(rows or ["| - | no headline metric in this model's metadata | - |"]),
        ]
    )


# ---- the page -------------------------------------------------------------------------------------
def image_panel() -> None:
    with gr.Tab("Image"):
        with gr.Row():
            with gr.Column():
                image = gr.File(label="Image (PNG, JPEG, ...)", elem_id="image-file")
                question = gr.Textbox(label="Question (optional)", placeholder="what colour is the circle?")
                threshold = gr.Slider(0, 1, value=0.5, step=0.05, label="Label threshold")
                button = gr.Button("Describe", variant="primary", elem_id="describe")
            with gr.Column():
                shown = gr.Image(label="Uploaded", interactive=False, height=160)
                caption = gr.Textbox(label="Caption", elem_id="caption")
                answer = gr.Textbox(label="Answer")
                predicted = gr.Textbox(label="Predicted labels")
                labels = gr.Label(label="Label scores", num_top_classes=8)
        button.click(describe, [image, question, threshold], [caption, labels, predicted, answer, shown])


def generate_panel() -> None:
    with gr.Tab("Generate"):
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", value="a large red circle above a blue square", elem_id="prompt")
                seed = gr.Number(label="Seed (optional: the same seed gives the same image)", precision=0)
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            picture = gr.Image(label="Generated", interactive=False, height=256, elem_id="generated")
        button.click(generate, [prompt, seed], picture)


def transcribe_panel() -> None:
    with gr.Tab("Transcribe"):
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Speech (WAV, OGG, FLAC)",
                    elem_id="transcribe-audio",
                )
                button = gr.Button("Transcribe", variant="primary", elem_id="transcribe")
            text = gr.Textbox(label="Transcript", elem_id="transcript")
        button.click(transcribe, audio, text)


def search_panel() -> None:
    with gr.Tab("Search"):
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Text", placeholder="a small blue square", elem_id="search-text")
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio (with text: fused)")
                image = gr.File(label="Image")
                target = gr.Dropdown(TARGETS, value="default", label="Search the gallery's")
                k = gr.Slider(1, 20, value=6, step=1, label="Results")
                button = gr.Button("Search", variant="primary", elem_id="search")
            results = gr.Gallery(label="Gallery items", columns=3, format="png", elem_id="results")
        button.click(search, [text, audio, image, target, k], results)


def build_page() -> gr.Blocks:
    """The demo page (its handlers find the service with bentoml.get_current_service())."""
    with gr.Blocks(title="OPT demo", analytics_enabled=False) as page:
        gr.Markdown("# OPT: text, image and audio in one model\nEvery panel calls the service's API in-process.")
        card = gr.Markdown(elem_id="model-card")
        image_panel()
        generate_panel()
        transcribe_panel()
        search_panel()
        page.load(model_card, outputs=card)
    return page


def page_app():
    """The page as an ASGI app (Gradio's own mount; its lifespan starts Gradio's queue) for
    OPTService.mount_asgi_app. Client-side rendering: no Node server. (BentoML 1.4.40's
    bentoml.gradio.mount_gradio_app predates Gradio 6: its page answers 500, no theme set.)"""
    from fastapi import FastAPI

    page = build_page()
    page.queue(default_concurrency_limit=None)  # the service's batchers and traffic limits bound the work
    return gr.mount_gradio_app(FastAPI(), page, path="/", ssr_mode=False, footer_links=["settings"])
