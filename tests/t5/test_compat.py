"""mtf_switch.t5.compat: mesh-tensorflow's decodes are text, one line each."""
import helpers  # noqa: F401  (graph mode, compat shim)
from mesh_tensorflow.transformer import utils
import seqio


class _Estimator:
  """Stands in for the TPUEstimator: `predict` returns fixed results."""

  def __init__(self, results):
    self._results = results

  def predict(self, input_fn, checkpoint_path=None):
    del input_fn, checkpoint_path
    return iter(self._results)


def test_decodes_are_text_whether_the_graph_detokenized_or_not():
  vocabulary = seqio.ByteVocabulary()
  ids = vocabulary.encode("mesh tensor")
  results = [
      # Off TPU, the graph detokenizes (decode_tf): bytes come out.
      {"inputs": b"switch", "outputs": b"expert router"},
      # On TPU, ids come out and utils.decode detokenizes them.
      {"inputs": ids, "outputs": ids},
  ]
  decodes = list(utils.decode(_Estimator(results), None, vocabulary))
  # str, not bytes: infer.gin's output file gets each line's str().
  assert decodes == ["expert router", "mesh tensor"]


def test_written_items_stay_one_line_each_whatever_they_hold(tmp_path):
  # A barely trained byte-level model decodes control characters too.
  items = ["plain", "carriage\rreturn", "crlf\r\nend", "tab\x0bvertical",
           "para\u2029graph", "new\nline"]
  filename = str(tmp_path / "predictions")
  utils.write_lines_to_file(items, filename)
  with open(filename) as f:  # universal newlines: "\r" ends a line too
    lines = f.read().splitlines()
  assert len(lines) == len(items)
  assert lines[0] == "plain"
  assert lines[1] == "carriage return"
  assert lines[2] == "crlf  end"
