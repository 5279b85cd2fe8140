"""Short text prompts of scenes: the shapes and how many of each, never their colours, sizes or
places.

A function of the data alone (a record's ground-truth `objects`; records without them, such as
real Localized Narratives, have no prompt). A prompt names only what the scene holds and always
leaves out the colours, which every narration speaks (opt.data.grammar), so the prompt and the
narration's audio are complementary: retrieval's prompt_audio_to_image against prompt_to_image
tests whether fusing them finds the image better than the prompt alone (issue 15).
"""

from __future__ import annotations

from collections import Counter

from opt.data.grammar import article, join_list, number_word, pluralize


def scene_prompt(record: dict) -> str | None:
    """'a circle and two stars' (shapes in order of first appearance), or None without objects."""
    objects = record.get("objects")
    if not objects:
        return None
    counts = Counter(o["shape"] for o in objects)  # insertion-ordered
    phrases = [f"{article(s)} {s}" if n == 1 else f"{number_word(n)} {pluralize(s)}" for s, n in counts.items()]
    return join_list(phrases)


def split_prompts(records: list[dict]) -> list[str] | None:
    """The prompt of every record, or None when any record has none (no prompt directions then)."""
    prompts = [scene_prompt(r) for r in records]
    return None if any(p is None for p in prompts) else prompts
