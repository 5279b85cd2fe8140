"""A real `prefect server` on 127.0.0.1 serves the pipeline's deployments: the nightly one carries
its cron schedule, and a run triggered through the API is picked up and completes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opt.servers import free_port

pytestmark = pytest.mark.timeout(1800)  # starts a real Prefect server and runs a served deployment

PROJECT = Path(__file__).resolve().parents[1]

TRIGGER = textwrap.dedent("""
    import json, sys, time
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    params = json.loads(sys.argv[1])
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while True:  # the serve process registers its deployments after the server is up
            try:
                nightly = client.read_deployment_by_name("opt-pipeline/nightly")
                client.read_deployment_by_name("opt-stage/stage")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    run = run_deployment("opt-stage/stage", parameters=params, timeout=240)
    crons = [s.schedule.cron for s in nightly.schedules]
    print(json.dumps({"state": run.state.type.value, "crons": crons}))
""")


@pytest.mark.timeout(420)
@pytest.mark.slow
def test_served_deployment_runs_on_a_real_server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    serving = subprocess.Popen(
        [sys.executable, str(PROJECT / "flows/serve.py"), "--port", str(port), "--cron", "15 4 * * *"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        params = {
            "name": "ingest",
            "overrides": [f"paths.root={tmp_path / 'run'}", "data.n=6", "data.workers=1"],
            "config_file": None,
        }
        trigger = subprocess.run(
            [sys.executable, "-c", TRIGGER, json.dumps(params)],
            capture_output=True,
            text=True,
            env={**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"},
            timeout=360,
        )
    finally:
        os.killpg(serving.pid, signal.SIGINT)
        try:
            log, _ = serving.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serving.pid, signal.SIGKILL)
            log, _ = serving.communicate()
    assert trigger.returncode == 0, f"{trigger.stdout}\n{trigger.stderr}\n--- serve log ---\n{log[-4000:]}"
    result = json.loads(trigger.stdout.strip().splitlines()[-1])
    assert result == {"state": "COMPLETED", "crons": ["15 4 * * *"]}
    assert (tmp_path / "run/data/raw/manifest.jsonl").read_text().count("\n") == 6
