"""`opt`: one subcommand per pipeline stage, each taking Hydra overrides (`key=value`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opt.stages import STAGES, StageFailed, run_stage
from opt.versions.commands import add_data_parser, run_data

OVERRIDES_HELP = "Hydra overrides, e.g. data.n=48 paths.root=DIR"
CONFIG_HELP = "read this composed config (e.g. DVC's params.yaml) instead of composing configs/"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opt", description="OPT, the Omni-Perception Pre-Trainer: pipeline stages.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", dest="config_file", metavar="FILE", help=CONFIG_HELP)
        p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    add_data_parser(sub, OVERRIDES_HELP, CONFIG_HELP)
    p = sub.add_parser("check", help="does this run reproduce the reference run within its tolerances? (exit 1: no)")
    p.add_argument("--reference", metavar="FILE", help="reference run (default: reference/default_run.yaml)")
    p.add_argument(
        "--write-from",
        nargs="+",
        metavar="RUN_DIR",
        help="instead: write the reference from these finished runs of the config (seeds differ)",
    )
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP + " (where the run is)")
    p = sub.add_parser("config", help="print (or write) the composed, resolved config")
    p.add_argument("-o", "--output", metavar="FILE", help="write it here (e.g. params.yaml) instead of stdout")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    return parser


def show_config(overrides: list[str], output: str | None) -> None:
    from opt.config import load_config, to_yaml

    text = to_yaml(load_config(overrides))
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write("# Written by `opt config -o params.yaml` from configs/ (Hydra). Do not edit by hand.\n")
            f.write(text)
    else:
        print(text, end="")


def run_check(overrides: list[str], reference: str | None, write_from: list[str] | None) -> int:
    """0 when every check of the reference holds, 1 when one does not or the run is incomplete.
    With `write_from`: write the reference from those runs instead (0 when written)."""
    from opt.check import DEFAULT_REFERENCE, check, write_reference
    from opt.config import load_config

    target = Path(reference) if reference else DEFAULT_REFERENCE
    try:
        if write_from:
            write_reference(load_config(overrides), [Path(d) for d in write_from], target)
            print(f"opt check: wrote {target} from {len(write_from)} runs")
            return 0
        results = check(load_config(overrides), target)
    except (FileNotFoundError, ValueError) as e:  # no run yet; an unreadable metrics file; runs of another config
        print(f"opt check: {e}", file=sys.stderr)
        return 1
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args = build_parser().parse_args(argv)
    try:
        if args.command == "config":
            show_config(args.overrides, args.output)
        elif args.command == "check":
            return run_check(args.overrides, args.reference, args.write_from)
        elif args.command == "data":
            run_data(args)
        else:
            run_stage(args.command, args.overrides, args.config_file)
    except (StageFailed, FloatingPointError) as e:  # a bad result; a run that diverged (NonFiniteError)
        print(f"opt {args.command}: FAILED: {e}", file=sys.stderr)
        return 1
    except (HydraException, OmegaConfBaseException) as e:
        print(f"opt {args.command}: bad configuration: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
