# Sourced by the other scripts: creates or reuses the project's virtual
# environment in .venv and installs the pinned stack into it when
# requirements.txt, constraints.txt or setup.py changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3.11}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating $VENV with $PYTHON_BIN"
  "$PYTHON_BIN" -m venv "$VENV"
fi
STAMP="$VENV/.mtf_switch-install"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/constraints.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "[env] installing the pinned stack into $VENV (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade "pip<26"
  "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt" -c "$ROOT/constraints.txt"
  # t5 depends on tfds-nightly, which ships the same tensorflow_datasets
  # module as tensorflow-datasets: put the pinned release's files back last.
  "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps tensorflow-datasets==4.9.3
  "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cd "$ROOT"
