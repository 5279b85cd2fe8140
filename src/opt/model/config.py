"""Config dataclasses of the model, the VQ image tokenizer, the pretext objectives and the trainer.

Per-tower sizes live in `ModelConfig`; `configs/model/{tiny,small,base}.yaml` set them. Every default here is
the value of the default composition (`model=small`, `configs/trainer/default.yaml`, ...): tests/test_config.py
fails on a key declared with two different values.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    name: str = "small"  # the defaults are configs/model/small.yaml, the size the default run trains
    dim: int = 256  # width of every tower (tokens are concatenated across modalities)
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    text_layers: int = 2
    image_layers: int = 2
    audio_layers: int = 2
    fusion_layers: int = 4  # the cross-modal encoder
    text_decoder_layers: int = 2
    image_decoder_layers: int = 2
    patch_size: int = 8  # image patch side in pixels; the VQ grid is image_size / patch_size
    audio_patch_frames: int = 16  # mel frames per audio patch (each patch spans all mel bins)
    max_audio_patches: int = 75  # 12 s at 10 ms hop / 16 frames
    max_text_tokens: int = 64
    image_pool: str = "max"  # image summary (retrieval, classification): "max" over patches, or "cls"
    image_stem: str = "linear"  # patches -> tokens: "linear" (ViT) or "conv" (ViT-C strided convs; README: Image stem)


@dataclass
class VQConfig:
    codebook_size: int = 256
    code_dim: int = 32
    hidden: int = 64
    commitment: float = 0.25
    ema_decay: float = 0.99
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3


@dataclass
class ObjectivesConfig:
    """Each pretext task has a weight; 0 switches it off."""

    mlm: float = 1.0  # masked language modelling (15%, 80/10/10)
    mvm: float = 1.0  # masked vision modelling: VQ code of masked patches (+ their pixels)
    mvm_pixel: float = 1.0  # MVM's pixel regression, a multiple of mvm (configs/objectives/all.yaml)
    mam: float = 1.0  # masked audio modelling: contrast among masked mel patches (+ their regression)
    mam_regression: float = 1.0  # MAM's mel regression, a multiple of mam (configs/objectives/all.yaml)
    text_denoise: float = 1.0  # text decoder rebuilds the caption from fused tokens (text masked)
    image_denoise: float = 1.0  # image decoder generates VQ codes (image masked)
    matching: float = 0.0  # tri-modal matching, OPT's five cases (off by default: configs/objectives/all.yaml)
    contrastive: float = 1.0  # InfoNCE between modality embeddings, learned temperature
    contrastive_hard_negatives: float = 0.5  # beta of HN-NCE's negative weights (0: plain InfoNCE)
    swap_negatives: list[str] = field(default_factory=list)  # word groups (shape, colour) swapped in negative captions
    text_mask_ratio: float = 0.15
    image_mask_ratio: float = 0.3
    audio_mask_ratio: float = 0.3
    # modality level: probability of dropping each whole modality from a sample
    drop_text: float = 0.1
    drop_image: float = 0.1
    drop_audio: float = 0.1
    # or, with either > 0 (drop_* at 0), held-out setups: the share of samples whose text / image a
    # decoder generates from the other modalities (objectives=hold_out, opt.model.pretext)
    hold_out_text: float = 0.0
    hold_out_image: float = 0.0
    clean_context: bool = False  # held-out setups: samples with a held-out modality are not masked
    matching_share: float = 1.0  # share of the batch fused for matching
    fused_share: float = 0.5  # share of the batch masked, fused and decoded; contrastive reads all of it
    matching_hard_negatives: bool = False  # swaps drawn by embedding similarity (ALBEF), else uniform
    use_audio: bool = True  # False: image+text only (the paper's ablation)


@dataclass
class TaskConfig:
    """Fine-tuning budget of one downstream task (`configs/task/<name>.yaml`)."""

    name: str = "retrieval"  # retrieval | classification | vqa | captioning | speech_recognition | text_to_image
    steps: int = 50
    step_factors: dict[str, int] = field(
        default_factory=lambda: {
            "text_to_image": 6,
            "captioning": 3,
            "retrieval": 3,
            "speech_recognition": 6,
            "classification": 6,
        }
    )  # task -> multiple of steps
    batch_factors: dict[str, int] = field(
        default_factory=lambda: {"retrieval": 2}
    )  # task -> multiple of batch_size and lr
    batch_size: int = 32
    lr: float = 3e-4
    head_lr_factor: float = 1.0  # a task's fresh heads learn at this multiple of lr
    from_scratch: bool = False  # True: no pre-training (the paper's baseline)
    hard_negatives: float = 0.5  # retrieval: HN-NCE beta of the fine-tuning loss (objectives.hard_negative_logits)
    rerank_k: int = 0  # retrieval: re-rank each text+audio query's top k with the matching head (0: off)
    any_modality: bool = False  # classification: also a fused head fed any subset of modalities
    probe_steps: int = 3000  # text_to_image: training steps of the attribute probe (cached per dataset)
    null_text_prob: float = 0.1  # text_to_image: share of fine-tuning prompts hidden, so guidance has a null half
    image_guidance: float = 3.0  # text_to_image: classifier-free guidance scale (1: plain conditional)
    image_temperature: float = 1.0  # text_to_image: sampling temperature of the VQ codes (0: greedy)
    image_top_k: int = 32  # text_to_image: sample among the k most likely codes (0: all)
    beam_width: int = 3  # captioning, speech recognition: beam search width (1: greedy)
    length_penalty: float = 0.0  # beam search: rank finished hypotheses by log-probability / length**this


@dataclass
class TrainerConfig:
    max_steps: int = 350
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 25
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"  # auto (bf16 where the device computes it natively, else fp32) | fp32 | bf16
    compile: bool = False
    device: str = "cpu"  # cpu | cuda | auto
    seed: int = 0
    deterministic: bool = True  # torch's deterministic kernels: same config, same bytes (see opt.train.seeding)
    checkpoint_every: int = 50
    resume: bool = True  # continue from the latest checkpoint of this run when present
    init_from: str | None = None  # start from these weights (fine-tuning); None: from scratch
    threads: int = 0  # torch intra-op threads; 0: torch's default
    length_buckets: int = 0  # >0: batches sorted by audio length this many at a time (less padding); 0: off
