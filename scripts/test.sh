#!/usr/bin/env bash
# Runs the whole test suite (fast and slow tests) in the project's venv.
# Arguments, if any, replace the default `tests`, e.g.
# `bash scripts/test.sh tests/test_routing.py -m "not slow"`.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest "${@:-tests}"
