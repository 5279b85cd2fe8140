"""`opt compare`: every pre-training variant fine-tuned and evaluated, one table."""

import json

from opt.config import load_config
from opt.tasks.compare import HEADLINE, VARIANTS, compare


def test_compare_writes_the_table_of_every_variant(pretrained_synth):
    root, overrides = pretrained_synth
    table = compare(load_config(overrides + ["task.steps=2", "trainer.max_steps=2"]))
    assert set(table) == set(VARIANTS)
    columns = {f"{task}/{metric}" for task, metrics in HEADLINE.items() for metric in metrics}
    for name, row in table.items():
        assert set(row) == columns, name
        assert all(isinstance(v, float) for v in row.values()), name
    assert json.loads((root / "metrics" / "compare.json").read_text()) == table
    report = (root / "reports" / "compare.md").read_text()
    assert all(f"| {name} |" in report for name in VARIANTS)
    no_pretraining = json.loads((root / "compare" / "no_pretraining" / "metrics" / "pretrain.json").read_text())
    assert no_pretraining["step"] == 0
    audio_free = load_config(overrides + ["objectives=image_text"]).objectives
    assert audio_free.use_audio is False
    for name in VARIANTS:  # one image tokenizer and one probe judge every variant
        for tool in ("image_tokenizer", "probe"):
            assert (root / "compare" / name / "models" / tool).resolve() == (root / "models" / tool).resolve()
    assert (root / "models" / "probe" / "probe.safetensors").exists()
