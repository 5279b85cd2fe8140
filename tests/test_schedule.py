"""flows/serve.py: the nightly deployment's schedule comes from the config's `schedule` (cron and
time zone), and --cron/--timezone override it. No Prefect server: deployments are built, not served."""

from flows.serve import deployments, nightly_schedule, parse_args
from opt.config import load_config, to_yaml


def test_nightly_runs_on_the_configs_schedule_unless_told_otherwise(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(to_yaml(load_config(["schedule.timezone=Europe/Berlin"])))
    default = nightly_schedule(parse_args(["--config-file", str(params)]))
    assert (default.cron, default.timezone) == ("0 2 * * *", "Europe/Berlin")
    overridden = nightly_schedule(parse_args(["--config-file", str(params), "--", "schedule.cron=30 1 * * 1"]))
    assert (overridden.cron, overridden.timezone) == ("30 1 * * 1", "Europe/Berlin")
    given = nightly_schedule(parse_args(["--config-file", str(params), "--cron", "15 4 * * *", "--timezone", "UTC"]))
    assert (given.cron, given.timezone) == ("15 4 * * *", "UTC")
    nightly, *others = deployments(given, str(params), [])
    assert [(s.schedule.cron, s.schedule.timezone) for s in nightly.schedules] == [("15 4 * * *", "UTC")]
    assert all(not d.schedules for d in others)
