"""The offline default corpus and its shipped vocabulary."""
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile

import helpers  # noqa: F401  (graph mode, compat shim)
import pytest
import seqio
import sentencepiece as spm

from mtf_switch.corpora import default_corpus


def test_collect_skips_and_counts_empty_and_duplicate_documents():
  docs = ["alpha", "", "  \n ", "beta", "alpha", "gamma"]
  splits, counts = default_corpus.collect(docs)
  assert sorted(splits["train"] + splits["validation"]) == [
      "alpha", "beta", "gamma"]
  assert counts == {"seen": 6, "empty": 2, "duplicates": 1,
                    "train": len(splits["train"]),
                    "validation": len(splits["validation"])}


def test_split_is_a_function_of_the_text_alone():
  texts = ["document %d" % i for i in range(2000)]
  for text in texts[:50]:
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100
    assert (default_corpus.split_of(text) == "validation") == (bucket < 2)
  share = sum(default_corpus.split_of(t) == "validation" for t in texts) / len(texts)
  assert 0.01 < share < 0.03


# Pickles iter_documents() to stdout: mtf_switch.corpora.default_corpus loaded from
# its file (argv[1]) alone, without the package (and so TensorFlow).
_READ_DOCUMENTS = """
import importlib.util, pickle, sys
spec = importlib.util.spec_from_file_location("corpus", sys.argv[1])
corpus = importlib.util.module_from_spec(spec)
spec.loader.exec_module(corpus)
pickle.dump(list(corpus.iter_documents()), sys.stdout.buffer)
"""


@pytest.mark.slow
def test_two_builds_give_identical_bytes_and_disjoint_splits(tmp_path):
  # The second build's documents are read meanwhile by another interpreter
  # (its own hash seed): the bytes may depend neither on the build nor on
  # the process that read the sources.
  with tempfile.TemporaryFile() as documents:
    reader = subprocess.Popen(
        [sys.executable, "-c", _READ_DOCUMENTS, default_corpus.__file__],
        stdout=documents)
    first = default_corpus.build(str(tmp_path / "a"))
    assert reader.wait(timeout=900) == 0
    documents.seek(0)
    second = default_corpus.build(str(tmp_path / "b"), pickle.load(documents))
  assert first == second
  for split in default_corpus.SPLITS:
    a = open(tmp_path / "a" / (split + ".tfrecord"), "rb").read()
    b = open(tmp_path / "b" / (split + ".tfrecord"), "rb").read()
    assert a == b and a
  train = set(default_corpus.read_split(str(tmp_path / "a"), "train"))
  validation = set(default_corpus.read_split(str(tmp_path / "a"), "validation"))
  assert len(train) == first["train"] > 10000
  assert len(validation) == first["validation"] > 100
  assert not train & validation
  manifest = json.load(open(tmp_path / "a" / "manifest.json"))
  assert manifest["sha256"] == first["sha256"]
  # Every document seen is counted once: kept, empty or a duplicate.
  assert manifest["seen"] == (manifest["train"] + manifest["validation"]
                              + manifest["empty"] + manifest["duplicates"])
  assert manifest["duplicates"] > 0


def test_shipped_vocabulary_round_trips_with_t5_ids_and_sentinels():
  processor = spm.SentencePieceProcessor(model_file=default_corpus.VOCABULARY_PATH)
  assert (processor.pad_id(), processor.eos_id(), processor.unk_id()) == (
      0, 1, 2)
  vocabulary = seqio.SentencePieceVocabulary(default_corpus.VOCABULARY_PATH,
                                             extra_ids=100)
  assert vocabulary.vocab_size == processor.get_piece_size() + 100
  text = "Return the number of items in a container."
  assert vocabulary.decode(vocabulary.encode(text)) == text
  # Short: the vocabulary was trained on docstrings.
  assert len(vocabulary.encode(text)) <= 12


def test_ensure_built_reuses_a_built_corpus(tmp_path):
  out_dir = tmp_path / default_corpus.CORPUS_NAME
  out_dir.mkdir()
  (out_dir / "manifest.json").write_text("{}")
  assert default_corpus.ensure_built(str(tmp_path)) == str(out_dir)
  assert os.listdir(out_dir) == ["manifest.json"]
