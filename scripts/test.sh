#!/usr/bin/env bash
# Install ltxv with its test extras (CPU torch pinned; the reference oracle without its stale deps) and run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[test]'
python3 -m pip install -q --no-deps ltx-video==0.1.2
ruff check .
ruff format --check .
python3 -m pytest -q "$@"
