"""Start a local Prefect server on 127.0.0.1 and serve the pipeline's deployments on a schedule.

    .venv/bin/python flows/serve.py                      # UI: http://127.0.0.1:4200
    .venv/bin/python flows/serve.py --cron "0 3 * * *" --timezone Europe/Berlin -- trainer.max_steps=600

Deployments: `opt-pipeline/nightly` (on the config's `schedule`: cron and time zone, by default
02:00 UTC; reads params.yaml like `dvc repro`), and unscheduled
`opt-data/data`, `opt-training/training`, `opt-release/release`, `opt-stage/stage` for runs from
the UI. With PREFECT_API_URL already set (or --no-server) it serves against that server instead.
Ctrl-C stops serving (schedules pause) and the server it started.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from opt.servers import wait_ready

PROJECT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="bind the server here (default: loopback only)")
    p.add_argument("--port", type=int, default=4200)
    p.add_argument("--cron", help="schedule of opt-pipeline/nightly (default: the config's schedule.cron)")
    p.add_argument("--timezone", help="IANA time zone of the cron (default: the config's schedule.timezone)")
    p.add_argument("--config-file", default="params.yaml", help="composed config the scheduled runs read")
    p.add_argument("--no-server", action="store_true", help="serve against $PREFECT_API_URL")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the scheduled runs")
    return p.parse_args(argv)


def start_server(host: str, port: int) -> subprocess.Popen:
    """`prefect server start` as a child process; returns once its API answers."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    prefect = Path(sys.executable).with_name("prefect")
    server = subprocess.Popen([str(prefect), "server", "start", "--host", host, "--port", str(port)], env=env)
    api_url = f"http://{host}:{port}/api"
    try:
        wait_ready(server, f"{api_url}/health", timeout=120, describe=lambda: f"is port {port} already in use?")
    except BaseException:
        server.terminate()
        raise
    os.environ["PREFECT_API_URL"] = api_url
    print(f"Prefect server: http://{host}:{port} (API {api_url})", flush=True)
    return server


def nightly_schedule(args: argparse.Namespace):
    """The Prefect cron schedule of opt-pipeline/nightly: the config's `schedule`, unless --cron/--timezone."""
    from prefect.schedules import Cron

    from opt.config import load_config

    schedule = load_config(args.overrides, args.config_file).schedule
    return Cron(args.cron or schedule.cron, timezone=args.timezone or schedule.timezone)


def deployments(schedule, config_file: str, overrides: list[str]) -> list:
    """The served deployments: opt-pipeline/nightly on `schedule`, the others started by hand."""
    from flows.data import data_flow
    from flows.pipeline import opt_pipeline, stage_flow
    from flows.release import release_flow
    from flows.training import training_flow

    parameters = {"overrides": overrides, "config_file": config_file}
    return [
        opt_pipeline.to_deployment(name="nightly", schedule=schedule, parameters=parameters),
        data_flow.to_deployment(name="data", parameters=parameters),
        training_flow.to_deployment(name="training", parameters=parameters),
        release_flow.to_deployment(name="release", parameters=parameters),
        stage_flow.to_deployment(name="stage", parameters={**parameters, "name": "ingest"}),
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.chdir(PROJECT)  # runs read params.yaml and write under the project, as `dvc repro` does
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", "30")  # long training is alive, not a zombie
    sys.path.insert(0, str(PROJECT))
    schedule = nightly_schedule(args)
    server = None if args.no_server or os.environ.get("PREFECT_API_URL") else start_server(args.host, args.port)
    try:
        from prefect import serve

        serve(*deployments(schedule, args.config_file, args.overrides), limit=1)  # one run at a time: shared files
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
