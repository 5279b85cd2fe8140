"""The BentoML service for real: `bentoml serve` on 127.0.0.1 (free port) with a packaged tiny model.

Every endpoint answers sane outputs for valid inputs of every accepted format; every kind of bad
input gets a 4xx with a message and the server keeps answering; the OpenAPI schema holds under
schemathesis (no 5xx).
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from PIL import Image
from serving_fixtures import audio_bytes, image_bytes, package_tiny, start_server, stop_server

from opt.serving.bentoml_compat import adaptive_batcher

IMAGE_SIZE, DIM = 64, 64  # the tiny model: prepare.image_size, model.dim


@pytest.fixture(scope="module")
def server(pretrained_synth, tmp_path_factory):
    packaged = package_tiny(pretrained_synth, tmp_path_factory)
    env = {**packaged["env"], "OPT_SERVE_MODEL": packaged["result"]["model"]}
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    proc, url = start_server(env, log)
    yield {"url": url, "log": log}
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server["url"], timeout=60) as c:
        yield c


def post_files(client, route: str, files: dict, data: dict | None = None) -> httpx.Response:
    return client.post(route, files={k: (f"upload_{k}", v) for k, v in files.items()}, data=data or {})


def assert_alive(client) -> None:
    assert client.post("/health", json={}).json()["status"] == "ok"


def test_binds_to_loopback_and_reports_health(server, client):
    assert f"listening on {server['url']}" in server["log"].read_text()
    health = client.post("/health", json={}).json()
    assert health["status"] == "ok" and health["dim"] == DIM and health["gallery_items"] > 0
    assert "retrieval" in health["finetuned"]


@pytest.mark.parametrize(
    "mode,fmt", [("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("I;16", "PNG")]
)
def test_caption_any_image_mode(client, mode, fmt):
    r = post_files(client, "/caption", {"image": image_bytes(mode, fmt)})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["caption"], str)


@pytest.mark.parametrize(
    "fmt,rate,channels", [("WAV", 44100, 2), ("OGG", 22050, 1), ("FLAC", 16000, 1), ("WAV", 8000, 1)]
)
def test_transcribe_any_audio_format_and_rate(client, fmt, rate, channels):
    r = post_files(client, "/transcribe", {"audio": audio_bytes(fmt, rate, 1.0, channels)})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["text"], str)


def test_generate_image_returns_a_png_of_the_model_size(client):
    r = client.post("/generate_image", json={"prompt": "a large red circle"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == "PNG" and image.size == (IMAGE_SIZE, IMAGE_SIZE)


def test_generate_image_with_a_seed_repeats_in_any_batch(client):
    def png(prompt: str, seed: int) -> bytes:
        r = client.post("/generate_image", json={"prompt": prompt, "seed": seed})
        assert r.status_code == 200, r.text
        return r.content

    first = png("a large red circle", 11)
    requests = [("a large red circle", 11), ("a small blue square above a green circle", 3), ("a gray cube", 12)] * 3
    with ThreadPoolExecutor(len(requests)) as pool:  # concurrent: batched with other prompts and seeds
        together = list(pool.map(lambda request: png(*request), requests))
    assert together[0] == together[3] == together[6] == first
    assert len({png("a large red circle", seed) for seed in (1, 2, 3)}) > 1


def test_a_served_caption_finds_its_own_image_in_the_top_5(server, client, pretrained_synth):
    """The fixture's model was trained on the gallery's (train) pairs: through HTTP, tokenizer,
    encoders and ranking, most captions must find their own image; chance is 5 / 42."""
    from opt.artifacts import training_split
    from opt.config import load_config

    records = training_split(load_config(pretrained_synth[1]), "train", with_codes=False).records()
    found = []
    for index, record in enumerate(records):
        body = client.post("/retrieve", json={"text": record["caption"], "k": 5, "target": "image"}).json()
        found.append(index in [item["index"] for item in body["items"]])
    assert sum(found) / len(found) >= 0.8, f"{sum(found)} of {len(found)} captions found their image"
    assert 5 / len(records) < 0.2


def check_ranked(body: dict, k: int, query: str, target: str) -> None:
    assert (body["query"], body["target"]) == (query, target)
    scores = [item["score"] for item in body["items"]]
    assert len(scores) == k and scores == sorted(scores, reverse=True)
    assert [item["rank"] for item in body["items"]] == list(range(1, k + 1))
    assert all(-1.0001 <= s <= 1.0001 for s in scores) and all(item["caption"] for item in body["items"])


def test_retrieve_from_every_query_kind(client):
    check_ranked(client.post("/retrieve", json={"text": "a small blue square", "k": 3}).json(), 3, "text", "image")
    check_ranked(
        post_files(client, "/retrieve", {"audio": audio_bytes("FLAC")}, {"k": "2"}).json(), 2, "audio", "image"
    )
    check_ranked(
        post_files(client, "/retrieve", {"image": image_bytes()}, {"k": "4", "target": "audio"}).json(),
        4,
        "image",
        "audio",
    )
    both = post_files(client, "/retrieve", {"audio": audio_bytes("WAV")}, {"text": "a red circle", "k": "2"})
    check_ranked(both.json(), 2, "text_audio", "image")


def test_classify_vqa_and_embed(client):
    body = post_files(client, "/classify", {"image": image_bytes()}, {"threshold": "0.5"}).json()
    scores = [lb["score"] for lb in body["labels"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert set(body["predicted"]) == {lb["label"] for lb in body["labels"] if lb["score"] >= 0.5}
    answer = post_files(client, "/vqa", {"image": image_bytes()}, {"question": "what colour is the square?"}).json()
    assert isinstance(answer["answer"], str) and 0 <= answer["score"] <= 1
    for kind, request in [
        ("text", {"json": {"text": "a red circle"}}),
        ("image", {"files": {"image": ("x.jpg", image_bytes("RGB", "JPEG"))}}),
        ("audio", {"files": {"audio": ("x.ogg", audio_bytes("OGG"))}}),
    ]:
        body = client.post("/embed", **request).json()
        vector = np.array(body["embedding"])
        assert body["modality"] == kind and body["dim"] == DIM == vector.shape[0]
        assert np.isfinite(vector).all() and math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-3)


def bomb_png(side: int = 30000) -> bytes:
    """A valid PNG header promising side x side pixels (a few hundred bytes on the wire)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\x00" * (side // 8 + 1) * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def nan_wav() -> bytes:
    samples = np.zeros(16000, dtype=np.float32)
    samples[100:200] = np.nan
    return audio_bytes("WAV", samples=samples, subtype="FLOAT")


BAD_REQUESTS = {
    "corrupt image": ("/caption", {"files": {"image": ("x.png", b"\x89PNG\r\n\x1a\nnot really a png")}}),
    "empty image": ("/caption", {"files": {"image": ("x.png", b"")}}),
    "truncated jpeg": ("/classify", {"files": {"image": ("x.jpg", image_bytes("RGB", "JPEG")[:300])}}),
    "text as image": ("/caption", {"files": {"image": ("x.txt", b"hello, I am text")}}),
    "decompression bomb": ("/caption", {"files": {"image": ("bomb.png", bomb_png())}}),
    "oversized upload": ("/caption", {"files": {"image": ("big.png", b"\x00" * 400_000)}}),
    "image as a URL": ("/caption", {"files": {"image": (None, "http://127.0.0.1:1/x.png")}}),
    "missing image": ("/caption", {"json": {}}),
    "corrupt audio": ("/transcribe", {"files": {"audio": ("x.wav", b"RIFF\x00\x00\x00\x00WAVEjunk")}}),
    "empty audio": ("/transcribe", {"files": {"audio": ("x.flac", b"")}}),
    "nan audio": ("/transcribe", {"files": {"audio": ("x.wav", nan_wav())}}),
    "too long audio": (
        "/transcribe",
        {
            "files": {
                "audio": ("x.flac", audio_bytes("FLAC", 8000, 30.0, subtype="PCM_16", samples=np.zeros(8000 * 30)))
            }
        },
    ),
    "image as audio": ("/transcribe", {"files": {"audio": ("x.wav", image_bytes())}}),
    "absurd text": ("/generate_image", {"json": {"prompt": "a red circle " * 1000}}),
    "empty text": ("/generate_image", {"json": {"prompt": "   "}}),
    "wrong type": ("/generate_image", {"json": {"prompt": 123}}),
    "negative seed": ("/generate_image", {"json": {"prompt": "a red circle", "seed": -1}}),
    "seed not a number": ("/generate_image", {"json": {"prompt": "a red circle", "seed": "lucky"}}),
    "malformed json": ("/generate_image", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    "k zero": ("/retrieve", {"json": {"text": "a circle", "k": 0}}),
    "k too large": ("/retrieve", {"json": {"text": "a circle", "k": 10_000}}),
    "no query": ("/retrieve", {"json": {}}),
    "two queries": ("/retrieve", {"files": {"image": ("x.png", image_bytes())}, "data": {"text": "a circle"}}),
    "bad target": ("/retrieve", {"json": {"text": "a circle", "target": "video"}}),
    "text_audio to text": (
        "/retrieve",
        {"files": {"audio": ("x.wav", audio_bytes())}, "data": {"text": "a", "target": "text"}},
    ),
    "question missing": ("/vqa", {"files": {"image": ("x.png", image_bytes())}}),
    "question not utf-8": (
        "/vqa",
        {"files": {"image": ("x.png", image_bytes()), "question": (None, b"what \xff colour")}},
    ),
    "question as a file, not utf-8": (
        "/vqa",
        {"files": {"image": ("x.png", image_bytes()), "question": ("q.txt", b"what \xff colour")}},
    ),
    "threshold out of range": ("/classify", {"files": {"image": ("x.png", image_bytes())}, "data": {"threshold": "7"}}),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_and_the_server_keeps_answering(client, name):
    route, request = BAD_REQUESTS[name]
    r = client.post(route, **request)
    assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text}"
    body = r.json()
    assert isinstance(body, dict) and body["error"], f"{name}: {r.text}"  # an object with the reason
    assert "/tmp/" not in r.text  # no server path of the upload
    assert_alive(client)


def test_each_bad_request_is_logged_as_one_line(server, client):
    """After every BAD_REQUESTS case: one line each with its reason, no ERROR, no traceback."""
    post_files(client, "/caption", {"image": b"\x89PNG\r\n\x1a\nnot really a png"})
    log = server["log"].read_text()
    assert "Traceback" not in log and "[ERROR]" not in log
    assert "refused POST /caption (400): bad image: " in log


def test_the_body_size_limit_is_the_constructed_services(monkeypatch):
    """UploadLimit passes everything through until BentoML has constructed the service (its
    start-up), then refuses bodies over the served model's max_upload_bytes with a 413."""
    from types import SimpleNamespace

    import bentoml
    from bentoml.exceptions import BentoMLException

    from opt.serving.service import UploadLimit

    def not_yet():
        raise BentoMLException("service isn't instantiated yet")

    async def app(scope, receive, send):
        reached.append(scope["type"])

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    def http(size: int) -> dict:
        return {"type": "http", "headers": [(b"content-length", str(size).encode())]}

    reached, sent, limit = [], [], UploadLimit(app)
    monkeypatch.setattr(bentoml, "get_current_service", not_yet)
    asyncio.run(limit({"type": "lifespan"}, receive, send))
    served = SimpleNamespace(limits=SimpleNamespace(max_upload_bytes=10))
    monkeypatch.setattr(bentoml, "get_current_service", lambda: served)
    asyncio.run(limit(http(10), receive, send))
    asyncio.run(limit(http(11), receive, send))
    assert reached == ["lifespan", "http"]
    assert sent[0]["status"] == 413 and b"max_upload_bytes=10" in sent[1]["body"]


def test_adaptive_batcher_groups_concurrent_calls_and_answers_each_its_own():
    batches = []

    def double(items: list) -> list:
        batches.append(list(items))
        time.sleep(0.02)
        if -1 in items:
            raise ValueError("bad item")
        return [2 * x for x in items]

    async def calls():
        call = adaptive_batcher(double, max_batch_size=8, max_latency_ms=10_000)
        answers = await asyncio.gather(*(call(i) for i in range(40)))
        with pytest.raises(ValueError, match="bad item"):
            await call(-1)
        return answers

    assert asyncio.run(calls()) == [2 * i for i in range(40)]
    assert sorted(x for b in batches[:-1] for x in b) == list(range(40))
    assert max(len(b) for b in batches) > 1 and all(len(b) <= 8 for b in batches)


def test_adaptive_batcher_keeps_cancellation_and_refuses_a_batch_size_of_zero():
    def slow(items: list) -> list:
        time.sleep(0.2)
        return items

    async def cancelled_call():
        task = asyncio.create_task(adaptive_batcher(slow, 8, 10_000)(1))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # not turned into a 503 ("overloaded")
        return task.cancelled()

    assert asyncio.run(cancelled_call())
    with pytest.raises(ValueError, match="max_batch_size >= 1"):
        adaptive_batcher(slow, 0, 10_000)


def test_concurrent_requests_each_get_their_own_answer(client):
    texts = [f"a {size} {colour} circle" for size in ("large", "small") for colour in ("red", "blue", "green", "gray")]
    alone = [client.post("/embed", json={"text": t}).json()["embedding"] for t in texts]
    with ThreadPoolExecutor(len(texts)) as pool:
        together = list(pool.map(lambda t: client.post("/embed", json={"text": t}).json()["embedding"], texts * 2))
    np.testing.assert_allclose(np.array(together), np.array(alone * 2), atol=1e-4)


def test_oversized_chunked_body_is_refused_before_it_is_read(client):
    def body():
        for _ in range(40):
            yield b"\x00" * 10_000  # 400 kB > the test limit (300 kB), no Content-Length

    r = client.post("/caption", content=body(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    assert_alive(client)


def test_openapi_document_names_the_service_and_model_and_the_json_bodies(client):
    doc = client.get("/docs.json").json()
    model = client.post("/health", json={}).json()["model"]
    assert doc["info"]["title"] == "OPT service" and doc["info"]["version"] == model.split(":")[1]
    assert model in doc["info"]["description"] and "README" not in doc["info"]["description"]
    for route, fields in {"/retrieve": {"text", "target", "k"}, "/embed": {"text"}}.items():
        media = doc["paths"][route]["post"]["requestBody"]["content"]
        assert set(media["application/json"]["schema"]["properties"]) == fields
        assert {"audio", "image"} <= set(media["multipart/form-data"]["schema"]["properties"])
    assert set(doc["paths"]["/caption"]["post"]["requestBody"]["content"]) == {"multipart/form-data"}


def test_openapi_schema_holds_without_server_errors(server):
    """schemathesis generates valid and invalid requests from the OpenAPI schema: no 5xx anywhere."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{server['url']}/docs.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"/caption", "/retrieve", "/embed", "/vqa"} <= {op.path for op in operations}
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def no_server_error(case):
                case.call_and_validate(checks=[not_a_server_error], timeout=60)

            try:
                no_server_error()
            except Unsatisfiable:  # no invalid request exists for an operation without inputs
                assert mode is GenerationMode.NEGATIVE
