#!/usr/bin/env bash
# Install ltxv with its test extras (CPU torch pinned; the reference oracle without its stale deps) and run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[test]'
python3 -m pip install -q --no-deps ltx-video==0.1.2
# The web page's test drives Debian's headless Chromium; install it only when missing.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if command -v apt-get >/dev/null; then
        (apt-get update -q && apt-get install -y -q chromium chromium-driver) >/dev/null ||
            echo "scripts/test.sh: could not install chromium; the web page test will be skipped" >&2
    fi
fi
ruff check .
ruff format --check .
python3 -m pytest -q "$@"
