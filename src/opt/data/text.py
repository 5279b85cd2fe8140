"""The text tokenizer: BPE (HuggingFace `tokenizers`) trained on TRAIN text only (`opt prepare`
gives it the train captions and the train items' VQA questions).

Lower-cased, accents stripped, whitespace collapsed; words split on spaces and marked with a
leading "▁" (SentencePiece style), then every punctuation character split off as a piece of its
own ("circle," -> "▁circle" ","), so a word is the same piece whatever follows it. Only what
follows a space carries "▁" (a word glued after punctuation, "x-y", goes without), so decoding
gives the normalised text back exactly ("circle, left").
BPE over that alphabet trains deterministically (same texts, same vocabulary); tokenizers'
WordPiece trainer does not: its "##" pieces get ids in hash-map order and ties between equal
counts then pick different merges from run to run (huggingface/tokenizers#1794).
Special tokens have fixed ids, [PAD] = 0.
Every caption is encoded as `[CLS] pieces... [SEP]`, truncated and padded to a fixed length;
the text decoder may read [CLS]/[SEP] as start/end or use [BOS]/[EOS] (both exist).
`tokenizer.json` carries the padding and truncation settings, so serving needs only that file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
PAD, UNK, CLS, SEP, MASK, BOS, EOS = SPECIAL_TOKENS
SPECIAL_IDS = {token: i for i, token in enumerate(SPECIAL_TOKENS)}  # every CaptionTokenizer checks it holds
TOKENIZER_FILE = "tokenizer.json"


class CaptionTokenizer:
    """A fixed-length caption encoder around a `tokenizers.Tokenizer`."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
        if ids != list(SPECIAL_IDS.values()):
            raise ValueError(f"special tokens must have ids 0..{len(SPECIAL_TOKENS) - 1}, got {ids}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.bos_id, self.eos_id = ids
        padding = tokenizer.padding
        if padding is None or padding.get("length") is None:
            raise ValueError("tokenizer has no fixed-length padding; build it with train_tokenizer")
        self.max_length = int(padding["length"])

    @property
    def special_count(self) -> int:
        """Ids below this are special tokens."""
        return len(SPECIAL_TOKENS)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> token ids (N, max_length) int32, [PAD]-filled, and token counts (N,) int32."""
        encodings = self.tokenizer.encode_batch(list(captions))
        ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(len(encodings), self.max_length)
        counts = np.array([sum(e.attention_mask) for e in encodings], dtype=np.int32)
        return ids, counts

    def decode(self, ids) -> str:
        """Token ids (L,) -> text, special tokens dropped."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: Path) -> CaptionTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def describe(self) -> dict:
        """What params.json records about the tokenizer."""
        return {
            "type": "bpe",
            "pre_tokenizer": "metaspace, then punctuation split off",
            "lowercase": True,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "template": f"{CLS} $A {SEP}",
            "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
        }


def untrained_bpe() -> Tokenizer:
    """An empty BPE pipeline: lowercase normaliser, "▁"-marked words, punctuation split off, exact decoder."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True, handle_chinese_chars=False),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"), pre_tokenizers.Punctuation()]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tokenizer


def train_tokenizer(train_texts: Iterable[str], vocab_size: int, max_length: int) -> CaptionTokenizer:
    """Train BPE on the train split's texts; encode to `max_length` tokens."""
    if max_length < 3:
        raise ValueError("max_length must leave room for [CLS], one token and [SEP]")
    tokenizer = untrained_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=1, show_progress=False
    )
    tokenizer.train_from_iterator(train_texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, cls_id), (SEP, sep_id)]
    )
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=0, pad_token=PAD)
    return CaptionTokenizer(tokenizer)
