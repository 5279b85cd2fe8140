"""`opt data versions|version|rollback|tag`: the data-version commands of the `opt` CLI."""

from __future__ import annotations

import argparse
import json

COLUMNS = ("id", "date", "kept", "quarantined", "hash", "git_revision", "message")


def add_data_parser(sub, overrides_help: str, config_help: str) -> None:
    """Add `opt data ...` to the `opt` subcommands."""
    data = sub.add_parser(
        "data",
        help="data versions: list, record, roll back (DVC or lakeFS)",
        description="Versions of data/raw and data/sources (versioning.backend=dvc|lakefs).",
    )
    commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    actions = {
        "versions": "list the dataset versions, newest first",
        "version": "record the current raw data as a version",
        "rollback": "restore the raw data of an earlier version exactly (--to REF)",
        "tag": "tag a version for a release (lakeFS)",
    }
    for name, help_text in actions.items():
        p = commands.add_parser(name, help=help_text, description=help_text)
        if name == "rollback":
            p.add_argument("--to", required=True, metavar="REF", help="version id, git revision, tag or branch")
        if name == "tag":
            p.add_argument("name", help="tag name")
            p.add_argument("--ref", metavar="REF", help="version to tag (default: the newest)")
        if name == "versions":
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("--config", dest="config_file", metavar="FILE", help=config_help)
        p.add_argument("overrides", nargs="*", help=overrides_help)


def run_data(args: argparse.Namespace) -> None:
    """Run one `opt data` action and print its result."""
    from opt import versions
    from opt.config import load_config

    cfg = load_config(args.overrides, args.config_file)
    if args.data_command == "versions":
        rows = versions.versions(cfg)
        print(json.dumps(rows, indent=1) if args.json else table(rows))
        return
    if args.data_command == "version":
        result = versions.version(cfg)
    elif args.data_command == "rollback":
        result = versions.rollback(cfg, args.to)
    else:
        result = versions.tag(cfg, args.name, args.ref)
    print(json.dumps(result, indent=1))


def table(rows: list[dict]) -> str:
    """Versions as a plain text table (ids and hashes shortened)."""
    if not rows:
        return "no data versions yet: `opt data version` records one"
    cells = [[short(key, row.get(key)) for key in COLUMNS] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(COLUMNS)]
    lines = [COLUMNS, *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def short(key: str, value) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text[:12] if key in ("id", "hash", "git_revision") and text != "workspace" else text
