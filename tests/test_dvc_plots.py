"""`dvc plots show` renders its chart offline (opt.dvc_plots' template), checked in headless Chromium
(conftest.py's `browser`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from opt.config import PROJECT_ROOT
from opt.dvc_plots import TEMPLATE, write_template

DVC = str(Path(sys.executable).with_name("dvc"))


def test_the_project_points_dvc_at_the_offline_template():
    out = subprocess.run([DVC, "config", "plots.html_template"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == TEMPLATE.name and TEMPLATE.parent.name == ".dvc"
    assert "dvc_plots/" in (PROJECT_ROOT / ".gitignore").read_text()


def test_dvc_plots_show_draws_a_chart_without_the_internet(tmp_path, browser):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env)
    (tmp_path / "losses.csv").write_text("step,loss\n" + "".join(f"{i},{3 / (i + 1):.3f}\n" for i in range(20)))
    (tmp_path / "dvc.yaml").write_text("plots:\n  - losses.csv:\n      x: step\n      y: loss\n")
    template = write_template(tmp_path / ".dvc" / "offline.html")
    subprocess.run([DVC, "config", "plots.html_template", template.name], cwd=tmp_path, check=True, env=env)
    subprocess.run([DVC, "plots", "show", "-o", "out"], cwd=tmp_path, check=True, env=env, capture_output=True)
    page_file = tmp_path / "out" / "index.html"
    assert "cdn.jsdelivr" not in page_file.read_text()
    page = browser.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(page_file.as_uri())
    page.locator(".vega-embed svg, .vega-embed canvas").first.wait_for(timeout=60_000)  # the chart is drawn
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requested), requested
    page.close()
