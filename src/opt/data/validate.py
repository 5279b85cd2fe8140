"""`opt validate`: a Great Expectations suite over the manifest and decoded-media statistics.

The suites run on the frames of `opt.data.media_stats` (`records`, `labels`, `splits`) in an
ephemeral GX context; two dataset-level checks (not empty, bad-record ratio) are reported the
same way. Reports: `reports/validation.md` (readable table) and `reports/validation.json`
(summary, per-check results, `metrics` for `dvc metrics show`). A failing dataset raises
StageFailed naming the failed checks, after the reports are written.
"""

from __future__ import annotations

import json
from pathlib import Path

from opt.config import path
from opt.data.manifest import MANIFEST, QUARANTINE, SPLITS
from opt.data.media import SAMPLE_RATE
from opt.data.media_stats import RECORD_FIELDS, build_frames
from opt.stages import StageFailed

REQUIRED_SPLITS = ("train", "val", "test")
ID_COLUMNS = {"records": "record", "labels": "label", "splits": "split"}  # names rows in reports
INT_TYPES = ["int", "int32", "int64"]
EXAMPLES = 5  # failing rows quoted per check


def validate(cfg) -> dict:
    """Validate `data/raw`, write the reports, raise StageFailed naming any failed check."""
    raw_dir = path(cfg, "raw")
    records, unparsable = read_manifest_lines(raw_dir / MANIFEST)
    quarantined = count_lines(raw_dir / QUARANTINE)
    frames = build_frames(raw_dir, records)
    found = (raw_dir / MANIFEST).exists()
    checks = dataset_checks(cfg, len(records), quarantined, unparsable, found) + run_suites(cfg, frames)
    summary = summarize(checks, frames, quarantined)
    md_path = write_reports(path(cfg, "reports"), summary)
    failed = summary["failed"]
    print(f"validate: {len(checks) - len(failed)}/{len(checks)} checks passed -> {md_path}")
    if failed:
        raise StageFailed(f"validation failed: {', '.join(failed)} (report: {md_path})")
    return summary


def read_manifest_lines(manifest: Path) -> tuple[list[dict], int]:
    """Records of the manifest (none if it is missing) and the count of lines that are not objects."""
    records, unparsable = [], 0
    if not manifest.exists():
        return records, unparsable
    for line in manifest.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            record = []
        if isinstance(record, dict):
            records.append(record)
        elif record is not None:
            unparsable += 1
    return records, unparsable


def count_lines(path_: Path) -> int:
    """Non-blank lines of a file (0 if it is missing)."""
    if not path_.exists():
        return 0
    return sum(1 for line in path_.read_text(encoding="utf-8").splitlines() if line.strip())


# ---------------------------------------------------------------- dataset-level checks


def dataset_check(name: str, rule: str, success: bool, observed: str) -> dict:
    return {
        "name": name,
        "frame": "dataset",
        "expectation": rule,
        "column": "",
        "success": bool(success),
        "observed": observed,
    }


def dataset_checks(cfg, kept: int, quarantined: int, unparsable: int, manifest_found: bool = True) -> list[dict]:
    """Not-empty, bad-record ratio and manifest syntax, reported like expectations."""
    v = cfg.validate
    total = kept + quarantined
    ratio = quarantined / total if total else 0.0
    return [
        dataset_check(
            "dataset_not_empty",
            f"records >= {v.min_records}",
            kept >= v.min_records,
            f"{kept} records" + ("" if manifest_found else f" (no {MANIFEST})"),
        ),
        dataset_check(
            "bad_record_ratio",
            f"quarantined / (kept + quarantined) <= {v.max_bad_ratio}",
            ratio <= v.max_bad_ratio,
            f"{quarantined} of {total} quarantined ({ratio:.1%})",
        ),
        dataset_check(
            "manifest_lines_are_records",
            "every manifest line is a JSON object",
            unparsable == 0,
            f"{unparsable} unparsable lines",
        ),
    ]


# ---------------------------------------------------------------- the GX suites


def schema_specs() -> list[tuple[str, str, dict]]:
    """Record schema: required columns present and non-null, types, split values, unique keys."""
    specs = [
        (
            "schema_required_columns",
            "ExpectTableColumnsToMatchSet",
            {"column_set": list(RECORD_FIELDS), "exact_match": False},
        )
    ]
    specs += [(f"not_null_{c}", "ExpectColumnValuesToNotBeNull", {"column": c}) for c in RECORD_FIELDS]
    specs += [
        (f"type_{c}", "ExpectColumnValuesToBeOfType", {"column": c, "type_": "str"})
        for c in ("dataset_id", "image_id", "caption", "voice_recording", "image")
    ]
    return specs + [
        ("type_annotator_id", "ExpectColumnValuesToBeInTypeList", {"column": "annotator_id", "type_list": INT_TYPES}),
        ("split_in_allowed_set", "ExpectColumnValuesToBeInSet", {"column": "split", "value_set": list(SPLITS)}),
        (
            "record_key_unique",
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["dataset_id", "image_id", "annotator_id"]},
        ),
    ]


def content_specs(cfg) -> list[tuple[str, str, dict]]:
    """Caption length, media readability, image size and mode, audio format, duration and level."""
    v, size = cfg.validate, cfg.data.image_size
    side = {"min_value": v.min_image_side, "max_value": max(cfg.ingest.max_image_side, size)}
    return [
        (
            "caption_words_in_range",
            "ExpectColumnValuesToBeBetween",
            {"column": "caption_words", "min_value": v.min_caption_words, "max_value": v.max_caption_words},
        ),
        ("media_readable", "ExpectColumnValuesToBeNull", {"column": "media_error"}),
        ("image_mode_rgb", "ExpectColumnValuesToBeInSet", {"column": "image_mode", "value_set": ["RGB"]}),
        ("image_width_in_range", "ExpectColumnValuesToBeBetween", {"column": "image_width", **side}),
        ("image_height_in_range", "ExpectColumnValuesToBeBetween", {"column": "image_height", **side}),
        (
            "synthetic_image_size",
            "ExpectColumnValuesToBeInSet",
            {"column": "image_size_px", "value_set": [f"{size}x{size}"], "row_condition": ("is_synthetic", "==", True)},
        ),
        (
            "audio_duration_in_range",
            "ExpectColumnValuesToBeBetween",
            {"column": "audio_duration", "min_value": v.min_audio_seconds, "max_value": v.max_audio_seconds},
        ),
        ("audio_level", "ExpectColumnValuesToBeBetween", {"column": "audio_rms", "min_value": v.min_audio_rms}),
        (
            "audio_sample_rate",
            "ExpectColumnValuesToBeInSet",
            {"column": "audio_sample_rate", "value_set": [SAMPLE_RATE]},
        ),
        ("audio_mono", "ExpectColumnValuesToBeInSet", {"column": "audio_channels", "value_set": [1]}),
        (
            "audio_seconds_match_media",
            "ExpectColumnValuesToBeBetween",
            {"column": "audio_seconds_error", "max_value": v.audio_seconds_tolerance},
        ),
    ]


def expectation_specs(cfg) -> dict[str, list[tuple[str, str, dict]]]:
    """(check name, GX expectation class, arguments) of each frame's suite."""
    labels = [("labels_seen_in_train", "ExpectColumnValuesToBeBetween", {"column": "train_objects", "min_value": 1})]
    splits = [
        (
            "split_sizes",
            "ExpectColumnValuesToBeBetween",
            {
                "column": "records",
                "min_value": cfg.validate.min_split_records,
                "row_condition": ("split", "in", list(REQUIRED_SPLITS)),
            },
        )
    ]
    return {"records": schema_specs() + content_specs(cfg), "labels": labels, "splits": splits}


def make_expectation(gx, name: str, kind: str, args: dict):
    """A GX expectation named by `meta.name`; `row_condition` given as (column, op, value)."""
    from great_expectations.expectations.row_conditions import Column

    args = dict(args)
    if "row_condition" in args:
        column, op, value = args.pop("row_condition")
        args["row_condition"] = Column(column).is_in(value) if op == "in" else Column(column) == value
    return getattr(gx.expectations, kind)(**args, meta={"name": name})


def ephemeral_context(gx):
    """An in-memory GX context with progress bars and analytics off."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.config.analytics_enabled = False
    return context


def run_suites(cfg, frames: dict) -> list[dict]:
    """Run each frame's suite (whole-dataframe batch, ValidationDefinition); checks in suite order."""
    import great_expectations as gx

    context = ephemeral_context(gx)
    source = context.data_sources.add_pandas("opt_validate")
    checks = []
    for frame, specs in expectation_specs(cfg).items():
        batch = source.add_dataframe_asset(name=frame).add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(
            gx.ExpectationSuite(name=frame, expectations=[make_expectation(gx, *spec) for spec in specs])
        )
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=frame, data=batch, suite=suite))
        result_format = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": EXAMPLES,
            "unexpected_index_column_names": [ID_COLUMNS[frame]],
        }
        result = definition.run(batch_parameters={"dataframe": frames[frame]}, result_format=result_format)
        by_name = {r.expectation_config.meta["name"]: r for r in result.results}
        checks += [check_from_result(frame, by_name[name]) for name, _, _ in specs]
    return checks


# ---------------------------------------------------------------- results as checks


def check_from_result(frame: str, result) -> dict:
    """One GX expectation result as a report row (name, rule, column, success, observed)."""
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    column = kwargs.pop("column", None) or ", ".join(kwargs.pop("column_list", None) or [])
    details = result.result or {}
    return {
        "name": config.meta["name"],
        "frame": frame,
        "expectation": describe_rule(config.type, kwargs),
        "column": column,
        "success": bool(result.success),
        "observed": describe_observed(result, ID_COLUMNS[frame]),
        "unexpected_count": details.get("unexpected_count"),
        "element_count": details.get("element_count"),
    }


def describe_rule(kind: str, kwargs: dict) -> str:
    """`expect_... key=value ... where <condition>` in one line."""
    condition = kwargs.pop("row_condition", None)
    kwargs.pop("condition_parser", None)
    text = " ".join([kind] + [f"{k}={v}" for k, v in kwargs.items() if v is not None])
    if isinstance(condition, dict) and condition.get("type") == "comparison":
        text += f" where {condition['column']['name']} {condition['operator']} {condition['parameter']}"
    elif condition:
        text += f" where {condition}"
    return text


def exception_message(info) -> str | None:
    """The first exception message in a result's `exception_info` (flat or keyed by metric)."""
    if not isinstance(info, dict):
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    return None


def describe_observed(result, id_column: str) -> str:
    """What the data showed: counts and examples of unexpected rows, an observed value, or an error."""
    error = exception_message(result.exception_info)
    if error:
        return f"error: {error}"
    details = result.result or {}
    if "unexpected_count" in details:
        text = f"{details['unexpected_count']} of {details['element_count']} unexpected"
        examples = [describe_row(dict(row), id_column) for row in details.get("partial_unexpected_index_list") or []]
        return text + (": " + "; ".join(examples) if examples else "")
    mismatched = (details.get("details") or {}).get("mismatched")
    if isinstance(mismatched, dict):  # table columns: only missing ones matter (extras are allowed)
        missing = mismatched.get("missing") or []
        return f"missing: {', '.join(map(str, missing))}" if missing else "all present"
    if details.get("observed_value") is not None:
        return shorten(details["observed_value"])
    return "as expected" if result.success else "not as expected"


def describe_row(row: dict, id_column: str) -> str:
    """`<id> (column=value, ...)` of one unexpected row."""
    row_id = row.pop(id_column, "?")
    values = ", ".join(f"{k}={shorten(v, 80)}" for k, v in row.items() if k != id_column)
    return f"{row_id} ({values})" if values else str(row_id)


def shorten(value, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- summary and reports


def mean(frame, column: str) -> float:
    values = frame[column].dropna() if column in frame else []
    return round(float(values.mean()), 4) if len(values) else 0.0


def summarize(checks: list[dict], frames: dict, quarantined: int) -> dict:
    """Success, failed check names, per-check rows, and numeric `metrics` for DVC."""
    records, splits = frames["records"], frames["splits"]
    failed = [c["name"] for c in checks if not c["success"]]
    total = len(records) + quarantined
    metrics = {
        "records": len(records),
        "quarantined": quarantined,
        "bad_ratio": round(quarantined / total, 6) if total else 0.0,
        "checks": len(checks),
        "failed_checks": len(failed),
        "splits": {str(s): int(n) for s, n in zip(splits["split"], splits["records"])},
        "labels": len(frames["labels"]),
        "mean_caption_words": mean(records, "caption_words"),
        "mean_audio_seconds": mean(records, "audio_duration"),
    }
    return {"success": not failed, "failed": failed, "metrics": metrics, "checks": checks}


def jsonable(value):
    """json.dumps fallback for numpy scalars and anything else (as text)."""
    return value.item() if hasattr(value, "item") else str(value)


def markdown_cell(value) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def markdown_report(summary: dict) -> str:
    """The human-readable report: verdict, dataset numbers, failed checks, every check."""
    m, checks = summary["metrics"], summary["checks"]
    verdict = "PASSED" if summary["success"] else "FAILED"
    lines = [
        f"# Validation report: {verdict}",
        "",
        f"{len(checks) - len(summary['failed'])} of {len(checks)} checks passed "
        "(Great Expectations suites on the records, labels and splits frames, plus dataset checks).",
        "",
        "| records | quarantined | bad ratio | " + " | ".join(m["splits"]) + " |",
        "|---" * (3 + len(m["splits"])) + "|",
        f"| {m['records']} | {m['quarantined']} | {m['bad_ratio']:.2%} | "
        + " | ".join(str(n) for n in m["splits"].values())
        + " |",
        "",
    ]
    if summary["failed"]:
        lines += ["## Failed checks", ""]
        lines += [f"- **{c['name']}** ({c['frame']}): {c['observed']}" for c in checks if not c["success"]]
        lines.append("")
    lines += [
        "## All checks",
        "",
        "| check | frame | column | expectation | result | observed |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        "| "
        + " | ".join(
            markdown_cell(v)
            for v in (
                c["name"],
                c["frame"],
                c["column"],
                c["expectation"],
                "pass" if c["success"] else "**FAIL**",
                c["observed"],
            )
        )
        + " |"
        for c in checks
    ]
    return "\n".join(lines) + "\n"


def write_reports(reports_dir: Path, summary: dict) -> Path:
    """Write validation.json and validation.md; returns the markdown path."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "validation.json").write_text(
        json.dumps(summary, indent=2, default=jsonable, allow_nan=False) + "\n", encoding="utf-8"
    )
    md_path = reports_dir / "validation.md"
    md_path.write_text(markdown_report(summary), encoding="utf-8")
    return md_path
