"""What mtf_switch's task registrations share: vocabularies, data dirs, lookup.

Configuration by environment, read when `mtf_switch.tasks` is imported (the
registrations are made at import, as T5's are):

  MTF_SWITCH_VOCABULARY       SentencePiece model of the English tasks;
                              default T5's on GCS (32000 pieces + 100
                              sentinels).
  MTF_SWITCH_MC4_VOCABULARY   SentencePiece model of the mC4 tasks; default
                              mT5's on GCS (250000 pieces + 100 sentinels).
  MTF_SWITCH_TFDS_DATA_DIR    TFDS data dir of C4, mC4 and the fine-tuning
                              data sets (T5's --t5_tfds_data_dir works too).

Offline, point the vocabularies at a local model, e.g. the default corpus's
`mtf_switch.corpora.default_corpus.VOCABULARY_PATH`.
"""
import difflib
import os

import seqio
import sentencepiece as spm

T5_VOCABULARY = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
MT5_VOCABULARY = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"
NUM_SENTINELS = 100


def sentencepiece_vocabulary(path):
  """seqio.SentencePieceVocabulary of `path` with T5's 100 sentinel ids.

  A local file is read and checked now, so that a missing or corrupt model
  fails here with its path named, not deep inside a data pipeline; a
  gs:// model is loaded on first use.

  Raises:
    FileNotFoundError: if a local path does not exist.
    ValueError: if a local file is not a SentencePiece model.
  """
  # mT5's model already holds its sentinels among its 250100 pieces.
  extra_ids = 0 if path == MT5_VOCABULARY else NUM_SENTINELS
  if not path.startswith("gs://"):
    if not os.path.isfile(path):
      raise FileNotFoundError("SentencePiece model %r does not exist" % path)
    try:
      with open(path, "rb") as f:
        spm.SentencePieceProcessor(model_proto=f.read())
    except RuntimeError as e:
      raise ValueError("%r is not a valid SentencePiece model (%s); point "
                       "MTF_SWITCH_VOCABULARY at a .model file written by "
                       "sentencepiece" % (path, e)) from None
  return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)


def output_features(vocabulary):
  return {
      "inputs": seqio.Feature(vocabulary, add_eos=True, required=False),
      "targets": seqio.Feature(vocabulary, add_eos=True),
  }


def set_tfds_data_dir(data_dir):
  """Reads TFDS data sets from data_dir (checked to exist).

  Raises:
    FileNotFoundError: naming data_dir, if it does not exist.
  """
  if not data_dir.startswith("gs://") and not os.path.isdir(data_dir):
    raise FileNotFoundError(
        "TFDS data dir %r does not exist; prepare the data sets there with "
        "`tfds build` or point MTF_SWITCH_TFDS_DATA_DIR at the folder that "
        "holds them (e.g. one with c4/en/2.2.0 inside)" % data_dir)
  seqio.set_tfds_data_dir_override(data_dir)


def get_task_or_mixture(name):
  """seqio's task or mixture `name`, or an error that suggests close names.

  Raises:
    ValueError: if nothing of that name is registered.
  """
  names = (list(seqio.TaskRegistry.names()) +
           list(seqio.MixtureRegistry.names()))
  if name not in names:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    raise ValueError("unknown task or mixture %r%s" % (
        name, "; did you mean: %s?" % ", ".join(close) if close else
        " (did you import mtf_switch.tasks?)"))
  return seqio.get_mixture_or_task(name)


ENGLISH_VOCABULARY = sentencepiece_vocabulary(
    os.environ.get("MTF_SWITCH_VOCABULARY") or T5_VOCABULARY)
MC4_VOCABULARY = sentencepiece_vocabulary(
    os.environ.get("MTF_SWITCH_MC4_VOCABULARY") or MT5_VOCABULARY)
if os.environ.get("MTF_SWITCH_TFDS_DATA_DIR"):
  set_tfds_data_dir(os.environ["MTF_SWITCH_TFDS_DATA_DIR"])
