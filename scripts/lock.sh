#!/usr/bin/env bash
# Re-resolve the dependency set in a scratch venv and pin it in constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3.11 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q torch==2.13.0 -e '.[mlops,eval,dev]'
{ echo "# The resolved set, pinned (pip install -c constraints.txt ...). Regenerate: scripts/lock.sh"
  "$tmp/venv/bin/pip" freeze --exclude-editable | grep -v '^#' | sed 's/^torch==\([0-9.]*\)+cpu$/torch==\1/'
} > constraints.txt
rm -rf "$tmp"
