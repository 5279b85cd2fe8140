#!/usr/bin/env bash
# One-command setup on a fresh Linux machine with Python 3.11: a venv in .venv with the
# pinned dependency set (CPU torch), the `opt` command, and the folders DVC expects.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e '.[mlops,eval,dev]'
# Chromium for the demo page's browser test (tests/test_demo.py; skipped without it): Debian's
# package where we are root with apt; anywhere else setup goes on without it.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } \
    || echo "setup: chromium not installed (the browser test will be skipped)"
fi
.venv/bin/python -m opt.dvc_plots >/dev/null  # .dvc/plots_template.html: `dvc plots show` offline
mkdir -p data/sources  # versioned by data.dvc: your own Localized Narratives files go here
.venv/bin/opt --help >/dev/null
echo "setup done: . .venv/bin/activate && opt --help"
