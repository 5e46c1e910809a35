r"""The offline default corpus: documentation that every install carries.

Text that each machine with the same Python and the same pinned packages
has byte for byte: pydoc's topic pages and the docstrings (modules, classes,
functions) of Python's standard library and of the pinned packages numpy,
gin, mesh_tensorflow, seqio and t5.  Source files are parsed, never
imported.  Documents are deduplicated, empty ones skipped and counted, and
split into train and validation by a hash of their text, so a document's
split never depends on what else is in the corpus.

  python -m mtf_switch.corpora.default_corpus --out_dir /tmp/corpus

writes `train.tfrecord` and `validation.tfrecord` (tf.train.Example with a
`text` feature) and `manifest.json` (counts and a SHA-256 of the documents).
`ensure_built()` builds it once into the data dir and reuses it.  The
building blocks (dedup, split, ordering, TFRecords, manifest, vocabulary)
serve every offline corpus; `mtf_switch.corpora.code_corpus` is the larger one.
"""
import argparse
import ast
import collections
import hashlib
import importlib.util
import json
import os
import sys
import sysconfig

# Packages of the pinned stack whose docstrings join the standard library's.
PACKAGES = ("numpy", "gin", "mesh_tensorflow", "seqio", "t5")
# Standard-library folders left out: tests and demos are code, not prose.
SKIPPED_DIRS = frozenset(["test", "tests", "idlelib", "site-packages",
                          "lib2to3", "turtledemo", "__pycache__"])
VALIDATION_PERCENT = 2
CORPUS_NAME = "default_corpus_v1"
# SentencePiece model trained on the train split (see train_vocabulary).
VOCABULARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "vocab", CORPUS_NAME + ".model")
SPLITS = ("train", "validation")

Corpus = collections.namedtuple(
    "Corpus", ["name", "documents", "vocabulary_path", "hash_order",
               "sources", "vocabulary_options"])
Corpus.__doc__ = """An offline corpus: what `ensure_built` builds.

Attributes:
  name: str, its folder under the data dir (versioned: a change of content
    is a new name).
  documents: function returning an iterable of candidate documents (str).
  vocabulary_path: its shipped SentencePiece model.
  hash_order: store each split in the order of the documents' SHA-256 (a
    fixed random order, so that reading it in order needs no shuffling)
    instead of first-seen order.
  sources: function returning a dict of what the documents came from, for
    the manifest.
  vocabulary_options: keyword arguments of `train_vocabulary` that made
    its SentencePiece model.
"""


def default_data_dir():
  """$MTF_SWITCH_DATA_DIR, else ~/.cache/mtf_switch."""
  return os.environ.get("MTF_SWITCH_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "mtf_switch")


def source_roots():
  """(name, folder) of every source, in a fixed order."""
  roots = [("stdlib", sysconfig.get_paths()["stdlib"])]
  for package in PACKAGES:
    spec = importlib.util.find_spec(package)
    roots.append((package, list(spec.submodule_search_locations)[0]))
  return roots


def _python_files(root):
  for folder, subfolders, files in os.walk(root):
    subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED_DIRS)
    for name in sorted(files):
      if name.endswith(".py"):
        yield os.path.join(folder, name)


def _docstrings(path):
  """Docstrings of a file's module, classes and functions (parsed only)."""
  try:
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
  except (SyntaxError, UnicodeDecodeError, ValueError):
    return
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                         ast.AsyncFunctionDef)):
      if (node.body and isinstance(node.body[0], ast.Expr)
          and isinstance(node.body[0].value, ast.Constant)
          and isinstance(node.body[0].value.value, str)):
        yield ast.get_docstring(node) or ""


def iter_documents():
  """Yields every candidate document's text, empty ones included."""
  import pydoc_data.topics  # pylint: disable=g-import-not-at-top
  for key in sorted(pydoc_data.topics.topics):
    yield pydoc_data.topics.topics[key]
  for _, root in source_roots():
    for path in _python_files(root):
      yield from _docstrings(path)


def split_of(text):
  """"validation" for VALIDATION_PERCENT % of documents by hash, else train."""
  bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)
  return "validation" if bucket % 100 < VALIDATION_PERCENT else "train"


def _text_hash(text):
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def collect(documents, hash_order=False):
  """Deduplicates and splits documents.

  Args:
    documents: iterable of str.
    hash_order: order each split by the documents' SHA-256, not first seen.

  Returns:
    (dict split -> list of str in first-seen order, dict of counts:
     seen, empty, duplicates, train, validation).
  """
  splits = {split: [] for split in SPLITS}
  counts = {"seen": 0, "empty": 0, "duplicates": 0}
  seen = set()
  for text in documents:
    counts["seen"] += 1
    text = text.strip()
    if not text:
      counts["empty"] += 1
      continue
    if text in seen:
      counts["duplicates"] += 1
      continue
    seen.add(text)
    splits[split_of(text)].append(text)
  if hash_order:
    for docs in splits.values():
      docs.sort(key=_text_hash)
  counts.update((split, len(docs)) for split, docs in splits.items())
  return splits, counts


def corpus_hash(splits):
  digest = hashlib.sha256()
  for split in SPLITS:
    for text in splits[split]:
      digest.update(split.encode() + b"\0" + text.encode("utf-8") + b"\0")
  return digest.hexdigest()


def build(out_dir, documents=None, hash_order=False, extra_manifest=None):
  """Writes a corpus to out_dir; returns its manifest (a dict).

  Args:
    out_dir: folder of train.tfrecord, validation.tfrecord, manifest.json.
    documents: iterable of str; default the default corpus's.
    hash_order: see `collect`.
    extra_manifest: dict of more manifest entries (e.g. the sources).
  """
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  splits, counts = collect(iter_documents() if documents is None
                           else documents, hash_order)
  os.makedirs(out_dir, exist_ok=True)
  # Each file goes to a temporary name of this process's first: a killed
  # build leaves no corpus that looks complete, and two processes building
  # the same corpus at once (test workers) each write whole files.
  suffix = ".tmp%d" % os.getpid()
  for split, texts in splits.items():
    tmp = os.path.join(out_dir, split + ".tfrecord" + suffix)
    with tf.io.TFRecordWriter(tmp) as writer:
      for text in texts:
        example = tf.train.Example(features=tf.train.Features(feature={
            "text": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[text.encode("utf-8")]))}))
        writer.write(example.SerializeToString())
    os.replace(tmp, os.path.join(out_dir, split + ".tfrecord"))
  manifest = dict(counts, sha256=corpus_hash(splits),
                  python=sys.version.split()[0],
                  validation_percent=VALIDATION_PERCENT,
                  bytes={split: sum(len(t.encode("utf-8")) for t in texts)
                         for split, texts in splits.items()},
                  **(extra_manifest or {}))
  path = os.path.join(out_dir, "manifest.json")
  with open(path + suffix, "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
  os.replace(path + suffix, path)
  return manifest


def read_split(corpus_dir, split):
  """The documents of one split of a built corpus, as str."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  texts = []
  for record in tf.io.tf_record_iterator(
      os.path.join(corpus_dir, split + ".tfrecord")):
    example = tf.train.Example.FromString(record)
    texts.append(example.features.feature["text"].bytes_list.value[0]
                 .decode("utf-8"))
  return texts


def train_vocabulary(corpus_dir, model_prefix, vocab_size=2000,
                     max_bytes=None, character_coverage=1.0):
  """Trains a corpus's SentencePiece model (e.g. VOCABULARY_PATH).

  Unigram model on the train split (its first max_bytes, if given), one
  thread so that the result is reproducible; T5's ids: 0 pad, 1 eos, 2 unk
  (seqio adds 100 sentinels).  Characters rarer than `character_coverage`
  leaves out become unknown (source code is full of rare symbols that
  would otherwise each take a piece).
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  text_file = model_prefix + ".txt"
  written = 0
  with open(text_file, "w", encoding="utf-8") as f:
    for text in read_split(corpus_dir, "train"):
      if max_bytes is not None and written >= max_bytes:
        break
      f.write(text + "\n")
      written += len(text) + 1
  spm.SentencePieceTrainer.train(
      input=text_file, model_prefix=model_prefix, vocab_size=vocab_size,
      model_type="unigram", character_coverage=character_coverage,
      num_threads=1,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      input_sentence_size=2000000, shuffle_input_sentence=False)
  os.remove(text_file)


def _check_sources(manifest_path, sources):
  """Raises ValueError if a built corpus came from other sources than the
  corpus's (e.g. built by an earlier version with other packages).

  A manifest without a source entry (a corpus built from given documents,
  as tests make them) is taken as it is.
  """
  with open(manifest_path) as f:
    manifest = json.load(f)
  for key, wanted in sources.items():
    if key in manifest and manifest[key] != wanted:
      built = set(manifest[key])
      raise ValueError(
          "%s was built from other %s than this version of mtf_switch "
          "reads (only in the built one: %s; only in this version's: %s); "
          "its documents differ. Remove %s to rebuild it, or point "
          "MTF_SWITCH_DATA_DIR elsewhere."
          % (manifest_path, key, sorted(built - set(wanted)) or "none",
             sorted(set(wanted) - built) or "none",
             os.path.dirname(manifest_path)))


def ensure_built(data_dir=None, corpus=None):
  """The corpus's folder under data_dir, built on first use.

  Args:
    data_dir: default `default_data_dir()`.
    corpus: a Corpus; default the default corpus (DEFAULT).
  """
  corpus = corpus or DEFAULT
  out_dir = os.path.join(data_dir or default_data_dir(), corpus.name)
  manifest_path = os.path.join(out_dir, "manifest.json")
  if os.path.exists(manifest_path):
    _check_sources(manifest_path, corpus.sources())
  else:
    print("building %s in %s ..." % (corpus.name, out_dir), file=sys.stderr)
    manifest = build(out_dir, corpus.documents(), corpus.hash_order,
                     corpus.sources())
    print("%s: %d train and %d validation documents (%d empty and %d "
          "duplicate ones skipped)" % (
              corpus.name, manifest["train"], manifest["validation"],
              manifest["empty"], manifest["duplicates"]), file=sys.stderr)
  return out_dir


DEFAULT = Corpus(CORPUS_NAME, iter_documents, VOCABULARY_PATH,
                 hash_order=False,
                 sources=lambda: {"sources": ["pydoc topics"] + [
                     name for name, _ in source_roots()]},
                 vocabulary_options={"vocab_size": 2000})


def command(corpus, argv=None, description=None):
  """The command line that builds `corpus` (and trains its vocabulary)."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--train_vocabulary", metavar="MODEL_PREFIX",
                      help="also train a SentencePiece model (how %s was "
                           "made)" % os.path.basename(corpus.vocabulary_path))
  args = parser.parse_args(argv)
  manifest = build(args.out_dir, corpus.documents(), corpus.hash_order,
                   corpus.sources())
  print(json.dumps(manifest, indent=1, sort_keys=True))
  if args.train_vocabulary:
    train_vocabulary(args.out_dir, args.train_vocabulary,
                     **corpus.vocabulary_options)


if __name__ == "__main__":
  command(DEFAULT, description=__doc__.split("\n")[0])
