r"""The offline code corpus: the Python source of the pinned stack.

The default corpus (`mtf_switch.corpora.default_corpus`, 4.6 MB of docstrings) is read
several times over by a few thousand steps, and a model that sees its data
again can only overfit with more parameters.  This corpus is about
seventy times larger: every Python file (code, comments and docstrings) of
the 141 distributions that the pinned stack installed when the corpus was
made, read from their installed records (never imported).  Their names and
versions ship in DISTRIBUTIONS_PATH: a distribution installed later (a test
tool, a user's own) does not change the corpus, and a listed one missing or
at another version stops the build, since the documents would differ.
Files above MAX_FILE_BYTES (generated tables) are left out; duplicates are
dropped and each split is stored in a fixed random order (by SHA-256), so
that reading it in order gives every run the same data without shuffling.

  python -m mtf_switch.corpora.code_corpus --out_dir /tmp/code_corpus \
      --train_vocabulary /tmp/code_corpus_v1

builds it (and trains the SentencePiece model shipped as VOCABULARY_PATH);
the tasks `mtf_switch_code_lm` and `mtf_switch_code_span_corruption`
build it on first use into the data dir.
"""
import importlib.metadata
import os
import sysconfig

from mtf_switch.corpora import default_corpus

NAME = "code_corpus_v1"
VOCABULARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "vocab", NAME + ".model")
# The distributions the corpus is made of, "name==version" a line.
DISTRIBUTIONS_PATH = os.path.join(os.path.dirname(VOCABULARY_PATH),
                                  NAME + ".distributions.txt")
# Text the vocabulary is trained on: the train split's first documents.
VOCABULARY_TRAINING_BYTES = 40 * 2**20
MAX_FILE_BYTES = 256 * 1024


def pinned_distributions(path=DISTRIBUTIONS_PATH):
  """(name, version) of each distribution the corpus is made of, in order."""
  with open(path) as f:
    return [tuple(line.strip().split("==")) for line in f if line.strip()]


def distributions(pinned=None):
  """(name, version, distribution) of the corpus's distributions, as
  installed in the interpreter's site-packages, in name order.

  Only site-packages itself counts: importing pkg_resources puts
  setuptools' vendored packages on sys.path, and what is imported must not
  change the corpus.  Distributions not in the list are ignored.

  Args:
    pinned: (name, version) pairs; default `pinned_distributions()`.

  Raises:
    ValueError: naming each listed distribution that is not installed or is
      installed at another version.
  """
  site_packages = sysconfig.get_paths()["purelib"]
  installed = {}
  for dist in importlib.metadata.distributions(path=[site_packages]):
    name = dist.metadata["Name"]
    if name:
      installed.setdefault(name.lower(), dist)
  found, wrong = [], []
  for name, version in pinned or pinned_distributions():
    dist = installed.get(name.lower())
    if dist is None or dist.version != version:
      wrong.append("%s==%s (installed: %s)" % (
          name, version, dist.version if dist else "none"))
    else:
      found.append((name, version, dist))
  if wrong:
    raise ValueError(
        "%s is made of the distributions in %s; these are missing or at "
        "another version, so the corpus would differ: %s. Install the pins "
        "(requirements.txt, constraints.txt)."
        % (NAME, DISTRIBUTIONS_PATH, ", ".join(wrong)))
  return found


def source_files(dist):
  """Paths of a distribution's installed .py files, in sorted order."""
  paths = []
  for file in dist.files or ():
    if str(file).endswith(".py"):
      path = str(dist.locate_file(file))
      if os.path.isfile(path) and os.path.getsize(path) <= MAX_FILE_BYTES:
        paths.append(path)
  return sorted(paths)


def iter_documents(pinned=None):
  """Yields each source file's text (undecodable files are skipped).

  Args:
    pinned: see `distributions`.
  """
  for _, _, dist in distributions(pinned):
    for path in source_files(dist):
      try:
        with open(path, encoding="utf-8") as f:
          yield f.read()
      except (UnicodeDecodeError, OSError):
        continue


def sources():
  """What the corpus is made of, for its manifest: the listed
  distributions (`distributions` checks that they are the installed ones)."""
  return {"distributions": ["%s==%s" % pin for pin in pinned_distributions()]}


CODE = default_corpus.Corpus(
    NAME, iter_documents, VOCABULARY_PATH, hash_order=True, sources=sources,
    vocabulary_options={"vocab_size": 2000,
                        "max_bytes": VOCABULARY_TRAINING_BYTES,
                        "character_coverage": 0.9995})


if __name__ == "__main__":
  default_corpus.command(CODE, description=__doc__.split("\n")[0])
