"""The offline code corpus: its sources, their order, its vocabulary."""
import itertools

import helpers  # noqa: F401  (graph mode, compat shim)
import seqio
import sentencepiece as spm

from mtf_switch import code_corpus


def test_sources_are_the_pinned_packages_in_name_order():
  names = [name.lower() for name, _, _ in code_corpus.distributions()]
  assert names == sorted(names)
  assert {"tensorflow", "mesh-tensorflow", "t5", "numpy"} <= set(names)
  assert not {"pip", "setuptools", "mtf-switch"} & set(names)
  pins = code_corpus.sources()["distributions"]
  assert "mesh-tensorflow==0.1.21" in [p.lower() for p in pins]


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
