#!/usr/bin/env bash
# Runs the whole test suite (fast and slow tests) in the project's venv, on
# two workers (pytest-xdist; a test file's tests stay in one worker, so
# module fixtures are built once). Arguments, if any, replace the default
# `tests`, e.g. `bash scripts/test.sh tests/test_routing.py -m "not slow"`;
# `-n 0` runs in one process.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest -n 2 --dist loadfile "${@:-tests}"
