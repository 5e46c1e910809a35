#!/usr/bin/env bash
# Runs the whole test suite (fast and slow tests) in the project's venv.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest tests "$@"
