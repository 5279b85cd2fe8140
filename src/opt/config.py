"""One typed configuration schema behind every Hydra config group.

`load_config(overrides)` composes `configs/config.yaml` with command-line style overrides
(`data.n=48`, `paths.root=/tmp/run`) and validates the result against `OPTConfig`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from opt.model.config import ModelConfig, ObjectivesConfig, TaskConfig, TrainerConfig, VQConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = Path(os.environ.get("OPT_CONFIG_DIR", PROJECT_ROOT / "configs"))


@dataclass
class PathsConfig:
    root: str | None = None  # None: the project you are in (nearest dvc.yaml up); all I/O lives under it
    raw: str = "data/raw"  # canonical dataset: manifest.jsonl, quarantine.jsonl, media
    prepared: str = "data/prepared"  # model-ready shards, tokenizer, contact sheet
    reports: str = "reports"  # human-readable reports (validation, ...)
    runs: str = "runs"  # resolved configs of each stage run
    checkpoints: str = "checkpoints"  # training runs: resumable checkpoints, per-step losses
    models: str = "models"  # final weights other stages load (image_tokenizer/, pretrain/, ...)
    metrics: str = "metrics"  # JSON metrics and CSV curves for `dvc metrics` / `dvc plots`


@dataclass
class DataConfig:
    source: str = "synth"  # synth | localized_narratives
    seed: int = 0
    n: int = 2000  # number of synthetic scenes (one narration each)
    image_size: int = 64
    max_objects: int = 3
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    compositional_fraction: float = 0.1  # scenes holding a colour-shape pair never seen in train
    heldout_pairs: int = 6  # colour-shape pairs reserved for test_compositional
    use_stamps: bool = False  # photo stamps from tuxpaint-stamps-default when installed (off: same bytes everywhere)
    stamps_dir: str = "/usr/share/tuxpaint/stamps"
    voices: list[str] = field(
        default_factory=lambda: ["en", "en-us", "en-gb-x-rp", "en-us+f3", "en+m3", "en-gb-scotland"]
    )
    rate_range: list[int] = field(default_factory=lambda: [140, 200])  # words per minute
    pitch_range: list[int] = field(default_factory=lambda: [30, 70])  # eSpeak pitch 0-100
    noise_probability: float = 0.5
    snr_db_range: list[float] = field(default_factory=lambda: [10.0, 30.0])
    workers: int = 0  # 0: all cores
    executor: str = "processes"  # processes: a local pool | prefect: blocks fan out through `task_runner`
    task_runner: str = "prefect.task_runners:ProcessPoolTaskRunner"  # e.g. prefect_dask:DaskTaskRunner


@dataclass
class IngestConfig:
    annotations: str | None = None  # Localized Narratives JSON-lines file
    images_dir: str | None = None  # holds <image_id>.<ext>
    audio_dir: str | None = None  # holds <voice_recording>
    dataset_id: str = "localized_narratives"
    max_image_pixels: int = 50_000_000  # larger images are decompression bombs
    max_image_side: int = 512  # canonical images are downscaled to fit this side
    default_split_val: float = 0.1  # records without a split are assigned by image_id hash
    default_split_test: float = 0.1


@dataclass
class ValidateConfig:
    max_bad_ratio: float = 0.2  # quarantined / (kept + quarantined)
    min_records: int = 1
    min_caption_words: int = 3
    max_caption_words: int = 400
    min_audio_seconds: float = 0.3
    max_audio_seconds: float = 600.0
    min_audio_rms: float = 1e-4
    min_split_records: int = 1  # for each of train, val, test
    min_image_side: int = 8  # pixels; synthetic images must be data.image_size squares
    audio_seconds_tolerance: float = 0.05  # |manifest audio_seconds - decoded duration|


@dataclass
class PrepareConfig:
    vocab_size: int = 1000
    max_text_tokens: int = 64
    image_size: int = 64
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    max_audio_seconds: float = 12.0  # longer audio is truncated in features, never rejected
    mel_scale: str = "htk"  # htk | slaney (as torchaudio's melscale_fbanks)
    mel_norm: str = "none"  # none | slaney (each triangle scaled to unit area)
    log_eps: float = 1e-6  # log-mel = ln(power_mel + log_eps); also the value of padded frames
    shard_size: int = 1024
    contact_sheet_items: int = 16
    workers: int = 0  # decoding processes; 0: all cores


@dataclass
class ServeLimits:
    """What one request may hold; anything beyond is a 4xx, never a crash."""

    max_upload_bytes: int = 10_000_000  # whole request body (checked before it is read)
    max_image_pixels: int = 20_000_000  # image header size; larger is a decompression bomb
    max_text_chars: int = 1000  # prompts, questions, text queries
    max_audio_seconds: float = 60.0  # decoded length of an uploaded recording
    max_generate_tokens: int = 64  # caption / transcript length cap
    max_top_k: int = 100  # retrieve: most gallery items one answer may list


@dataclass
class ServeBatching:
    """Adaptive batching of every model call of the service (BentoML's CorkDispatcher, in-process)."""

    max_batch_size: int = 32  # samples per batch
    max_latency_ms: int = 10_000  # requests that would wait longer are refused (503)


@dataclass
class ServeConfig:
    """`opt package` (best model -> BentoML store -> Bento) and the BentoML service."""

    metric: str = "retrieval.test.text_to_image/R@1"  # dotted path into metrics/eval.json (task.split.metric)
    metric_mode: str = "max"  # max | min: which value of `metric` is best
    model_name: str = "opt"  # name in the BentoML model store (tag opt:<version>)
    bento_name: str = "opt_service"  # name of the built Bento
    bentoml_home: str | None = None  # BentoML store; None: $BENTOML_HOME, else ~/bentoml (outside the project)
    build_bento: bool = True  # false: only import the model into the store
    host: str = "127.0.0.1"  # the service binds here unless told otherwise (`bentoml serve --host`)
    port: int = 3000
    workers: int = 1  # service processes (each holds the model and its own batching)
    torch_threads: int = 1  # intra-op threads of each service process (0: torch's default); 1 avoids
    # oversubscribing a small CPU shared with the HTTP process (2 threads ran caption 2x slower on 2 cores)
    timeout: int = 60  # seconds per request
    gallery_split: str = "test"  # retrieve searches this prepared split (copied into the model)
    top_k: int = 5  # retrieve: items returned when the request does not say
    limits: ServeLimits = field(default_factory=ServeLimits)
    batching: ServeBatching = field(default_factory=ServeBatching)


@dataclass
class LakeFSConfig:
    """The lakeFS repository of `versioning.backend=lakefs`; server and credentials come from the
    usual LAKECTL_* environment variables (or ~/.lakectl.yaml), read by the lakefs SDK itself."""

    repository: str = "opt-pipeline"  # created on the first `opt data version` when missing
    branch: str = "main"  # the repository's main branch: one merge commit per data version
    storage_namespace: str = "local://opt-pipeline"  # where a new repository keeps its objects


@dataclass
class VersioningConfig:
    """`opt data version|versions|rollback`: versions of the raw data (data/raw, data/sources)."""

    backend: str = "dvc"  # dvc (git revisions + DVC cache/remote) | lakefs | none (scratch runs: record nothing)
    push: bool = True  # dvc: push the new version to the default DVC remote when one is configured
    lakefs: LakeFSConfig = field(default_factory=LakeFSConfig)


@dataclass
class ScheduleConfig:
    """When flows/serve.py runs the deployment `opt-pipeline/nightly` (Prefect cron schedule)."""

    cron: str = "0 2 * * *"  # minute hour day month weekday
    timezone: str = "UTC"  # IANA name the cron reads in, e.g. Europe/Berlin


@dataclass
class OPTConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    image_tokenizer: VQConfig = field(default_factory=VQConfig)
    objectives: ObjectivesConfig = field(default_factory=ObjectivesConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    versioning: VersioningConfig = field(default_factory=VersioningConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


def typed(cfg) -> OPTConfig:
    """Merge a plain config into the schema: unknown keys and wrong types raise."""
    schema = OmegaConf.structured(OPTConfig)
    merged = OmegaConf.merge(schema, cfg)
    OmegaConf.set_readonly(merged, False)
    return merged  # type: ignore[return-value]


def load_config(overrides: list[str] | None = None, config_file: str | Path | None = None) -> OPTConfig:
    """The typed config of a run.

    Without `config_file`: compose `configs/config.yaml` with Hydra overrides (`data.n=48`).
    With it: read an already composed file (DVC's `params.yaml`), then apply the overrides
    as dotlist entries. Both ways give the same parameters for the same values.
    """
    if config_file is not None:
        base = OmegaConf.load(config_file)
        return typed(OmegaConf.merge(typed(base), OmegaConf.from_dotlist(list(overrides or []))))
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    return typed(cfg)


def to_yaml(cfg) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def root_dir(cfg) -> Path:
    """The run's root folder, absolute: `paths.root`, else the project holding the working
    directory (the nearest folder up with a `dvc.yaml`, as DVC runs stages), else the cwd."""
    if cfg.paths.root:
        return Path(cfg.paths.root).resolve()
    cwd = Path.cwd().resolve()
    return next((d for d in (cwd, *cwd.parents) if (d / "dvc.yaml").is_file()), cwd)


def path(cfg, name: str) -> Path:
    """Absolute path of one of `cfg.paths` (e.g. `path(cfg, "raw")`)."""
    return root_dir(cfg) / getattr(cfg.paths, name)


def save_resolved(cfg, stage: str) -> Path:
    """Write the fully resolved config of a stage run to `runs/<stage>.yaml`."""
    out = path(cfg, "runs") / f"{stage}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_yaml(cfg))
    return out
