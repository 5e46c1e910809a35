"""Test-wide settings, applied before any test module imports mtf_switch."""
import os
import sys

import gin
import pytest

# The task registry's vocabularies default to T5's on GCS, out of reach
# offline: tests use the default corpus's shipped SentencePiece model.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VOCABULARY = os.path.join(_REPO, "mtf_switch", "corpora", "vocab",
                           "default_corpus_v1.model")
os.environ.setdefault("MTF_SWITCH_VOCABULARY", _VOCABULARY)
os.environ.setdefault("MTF_SWITCH_MC4_VOCABULARY", _VOCABULARY)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _clear_gin_bindings():
  """Each test starts from no gin bindings.

  The layer classes are gin-configurable, so a binding left by one test
  (say `dispatch_mode = "index"`) would silently change a layer that a later
  test builds directly.
  """
  gin.clear_config()
  yield
  gin.clear_config()
