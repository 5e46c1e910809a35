"""The offline code corpus: its sources, their order, its vocabulary."""
import itertools

import helpers  # noqa: F401  (graph mode, compat shim)
import pytest
import seqio
import sentencepiece as spm

from mtf_switch.corpora import code_corpus
from mtf_switch.corpora import default_corpus


def test_sources_are_the_listed_distributions_in_name_order():
  names = [name.lower() for name, _, _ in code_corpus.distributions()]
  assert names == sorted(names)
  assert len(names) == len(code_corpus.pinned_distributions()) == 141
  assert {"tensorflow", "mesh-tensorflow", "t5", "numpy"} <= set(names)
  assert not {"pip", "setuptools", "mtf-switch"} & set(names)
  pins = code_corpus.sources()["distributions"]
  assert "mesh-tensorflow==0.1.21" in [p.lower() for p in pins]


def test_distributions_installed_after_the_corpus_was_made_are_left_out():
  # The test tools came after code_corpus_v1 and are installed here; reading
  # them changed the corpus on every machine that had them (a regression).
  import hypothesis  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  names = {name.lower() for name, _, _ in code_corpus.distributions()}
  assert not {"hypothesis", "pytest-xdist", "execnet",
              "sortedcontainers"} & names


def test_a_missing_or_other_version_distribution_stops_the_build():
  pinned = code_corpus.pinned_distributions()
  changed = [("absl-py", "0.0.1") if name == "absl-py" else (name, version)
             for name, version in pinned] + [("no-such-dist", "1.0")]
  with pytest.raises(ValueError) as error:
    code_corpus.distributions(changed)
  message = str(error.value)
  assert "absl-py==0.0.1 (installed: 1.4.0)" in message
  assert "no-such-dist==1.0 (installed: none)" in message
  with pytest.raises(ValueError, match="absl-py==0.0.1"):
    next(code_corpus.iter_documents(changed))


def test_a_corpus_built_from_other_distributions_is_refused(tmp_path):
  out_dir = tmp_path / code_corpus.NAME
  stale = code_corpus.sources()["distributions"] + ["hypothesis==6.0"]
  default_corpus.build(str(out_dir), ["def f():\n  return 1"],
               extra_manifest={"distributions": stale})
  with pytest.raises(ValueError) as error:
    default_corpus.ensure_built(str(tmp_path), code_corpus.CODE)
  assert "['hypothesis==6.0']" in str(error.value)
  assert str(out_dir) in str(error.value)
  assert (out_dir / "train.tfrecord").exists()  # nothing removed


def test_documents_come_in_the_same_order_and_within_the_size_limit():
  first = list(itertools.islice(code_corpus.iter_documents(), 300))
  again = list(itertools.islice(code_corpus.iter_documents(), 300))
  assert first == again
  assert all(len(d.encode("utf-8")) <= code_corpus.MAX_FILE_BYTES
             for d in first)
  assert sum("def " in d for d in first) > 100


def test_shipped_vocabulary_has_t5_ids_and_encodes_code_compactly():
  processor = spm.SentencePieceProcessor(
      model_file=code_corpus.VOCABULARY_PATH)
  assert (processor.pad_id(), processor.eos_id(), processor.unk_id()) == (
      0, 1, 2)
  assert processor.get_piece_size() == (
      code_corpus.CODE.vocabulary_options["vocab_size"])
  vocabulary = seqio.SentencePieceVocabulary(code_corpus.VOCABULARY_PATH,
                                             extra_ids=100)
  line = "def __init__(self, name=None):"
  assert vocabulary.decode(vocabulary.encode(line)) == line
  assert len(vocabulary.encode(line)) <= 12
