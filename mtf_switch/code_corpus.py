r"""The offline code corpus: the Python source of the pinned stack.

The default corpus (`mtf_switch.corpus`, 4.6 MB of docstrings) is read
several times over by a few thousand steps, and a model that sees its data
again can only overfit with more parameters.  This corpus is about
seventy times larger: every Python file (code, comments and docstrings) of
the packages that the pinned stack installs, read from their installed
records (never imported), so each machine with the same pins has the same
documents.  Files above MAX_FILE_BYTES (generated tables) and the
installers' own packages are left out; duplicates are dropped and each
split is stored in a fixed random order (by SHA-256), so that reading it
in order gives every run the same data without shuffling.

  python -m mtf_switch.code_corpus --out_dir /tmp/code_corpus \
      --train_vocabulary /tmp/code_corpus_v1

builds it (and trains the SentencePiece model shipped as VOCABULARY_PATH);
the tasks `mtf_switch_code_lm` and `mtf_switch_code_span_corruption`
build it on first use into the data dir.
"""
import importlib.metadata
import os
import sysconfig

from mtf_switch import corpus

NAME = "code_corpus_v1"
VOCABULARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "vocab", NAME + ".model")
# Text the vocabulary is trained on: the train split's first documents.
VOCABULARY_TRAINING_BYTES = 40 * 2**20
MAX_FILE_BYTES = 256 * 1024
# The installers' packages, whose versions are not pinned, and this one.
SKIPPED_DISTRIBUTIONS = frozenset(["pip", "setuptools", "wheel",
                                   "mtf-switch", "mtf_switch"])


def distributions():
  """(name, version, distribution) of the distributions installed in the
  interpreter's site-packages, sorted, without SKIPPED_DISTRIBUTIONS.

  Only site-packages itself counts: importing pkg_resources puts
  setuptools' vendored packages on sys.path, and what is imported must not
  change the corpus.
  """
  site_packages = sysconfig.get_paths()["purelib"]
  found = {}
  for dist in importlib.metadata.distributions(path=[site_packages]):
    name = dist.metadata["Name"]
    if name and name.lower() not in SKIPPED_DISTRIBUTIONS:
      found.setdefault(name.lower(), (name, dist.version, dist))
  return [found[key] for key in sorted(found)]


def source_files(dist):
  """Paths of a distribution's installed .py files, in sorted order."""
  paths = []
  for file in dist.files or ():
    if str(file).endswith(".py"):
      path = str(dist.locate_file(file))
      if os.path.isfile(path) and os.path.getsize(path) <= MAX_FILE_BYTES:
        paths.append(path)
  return sorted(paths)


def iter_documents():
  """Yields each source file's text (undecodable files are skipped)."""
  for _, _, dist in distributions():
    for path in source_files(dist):
      try:
        with open(path, encoding="utf-8") as f:
          yield f.read()
      except (UnicodeDecodeError, OSError):
        continue


def sources():
  return {"distributions": ["%s==%s" % (name, version)
                            for name, version, _ in distributions()]}


CODE = corpus.Corpus(
    NAME, iter_documents, VOCABULARY_PATH, hash_order=True, sources=sources,
    vocabulary_options={"vocab_size": 2000,
                        "max_bytes": VOCABULARY_TRAINING_BYTES,
                        "character_coverage": 0.9995})


if __name__ == "__main__":
  corpus.command(CODE, description=__doc__.split("\n")[0])
