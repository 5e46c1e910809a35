"""Pre-training tasks: C4 span corruption, mC4, and the offline default corpus.

- `mtf_switch_c4_span_corruption`: T5's objective on C4 (15% noise, mean
  span 3; inputs 512 -> targets 114 tokens), the paper's pre-training task
  (Section 3).
- `mtf_switch_mc4.<language>` for each of mC4's languages and the mixture
  `mtf_switch_mc4`, sampled as mT5 does: rate proportional to the number of
  examples to the power 0.3 (temperature 1 / 0.3), for mSwitch (Section 5.6).
- `mtf_switch_default_span_corruption` and `mtf_switch_default_lm`: the
  same objective, and plain language modelling, on the offline default
  corpus (`mtf_switch.corpora.default_corpus`) with its own small vocabulary.
- `mtf_switch_code_span_corruption` and `mtf_switch_code_lm`: the same on
  the larger offline code corpus (`mtf_switch.corpora.code_corpus`), for studies
  that must never repeat data.
"""
import functools

import seqio
from t5.data import preprocessors
import tensorflow.compat.v2 as tf
from tensorflow_datasets.text import c4 as tfds_c4

from mtf_switch.corpora import code_corpus
from mtf_switch.corpora import default_corpus
from mtf_switch.tasks import common

MC4_LANGUAGES = tuple(tfds_c4.MC4_LANGUAGES)
MC4_TEMPERATURE = 1.0 / 0.3

_SPAN_CORRUPTION = [
    functools.partial(preprocessors.rekey,
                      key_map={"inputs": None, "targets": "text"}),
    seqio.preprocessors.tokenize,
    seqio.CacheDatasetPlaceholder(),
    preprocessors.span_corruption,
    seqio.preprocessors.append_eos_after_trim,
]

seqio.TaskRegistry.add(
    "mtf_switch_c4_span_corruption",
    source=seqio.TfdsDataSource(tfds_name="c4/en:2.2.0"),
    preprocessors=_SPAN_CORRUPTION,
    output_features=common.output_features(common.ENGLISH_VOCABULARY),
    metric_fns=[])

for _language in MC4_LANGUAGES:
  seqio.TaskRegistry.add(
      "mtf_switch_mc4.%s" % _language.replace("-", "_"),
      source=seqio.TfdsDataSource(
          tfds_name="c4/multilingual:3.1.0",
          splits={"train": _language,
                  "validation": "%s-validation" % _language}),
      preprocessors=_SPAN_CORRUPTION,
      output_features=common.output_features(common.MC4_VOCABULARY),
      metric_fns=[])

seqio.MixtureRegistry.add(
    "mtf_switch_mc4",
    ["mtf_switch_mc4.%s" % lang.replace("-", "_") for lang in MC4_LANGUAGES],
    default_rate=functools.partial(seqio.mixing_rate_num_examples,
                                   temperature=MC4_TEMPERATURE))


def corpus_source(offline_corpus):
  """seqio source of an offline corpus's documents as {"text": ...}; the
  corpus is built on first use."""

  def read(split, shuffle_files=False, seed=None):
    del shuffle_files, seed  # one file per split
    corpus_dir = default_corpus.ensure_built(corpus=offline_corpus)
    return tf.data.TFRecordDataset(
        "%s/%s.tfrecord" % (corpus_dir, split)).map(
            lambda record: tf.io.parse_single_example(
                record, {"text": tf.io.FixedLenFeature([], tf.string)}))
  return seqio.FunctionDataSource(read, splits=default_corpus.SPLITS)


def _language_modelling(vocabulary):
  """Preprocessors of a decoder-only LM task: documents concatenated and
  cut into targets of the sequence length."""
  return [
      functools.partial(preprocessors.rekey, key_map={"targets": "text"}),
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      preprocessors.reduce_concat_tokens,
      preprocessors.split_tokens_to_targets_length,
      seqio.preprocessors.append_eos_after_trim,
  ], {"targets": seqio.Feature(vocabulary, add_eos=True)}


def _add_offline_corpus_tasks(prefix, offline_corpus):
  """<prefix>_span_corruption and <prefix>_lm on an offline corpus."""
  vocabulary = seqio.SentencePieceVocabulary(
      offline_corpus.vocabulary_path, extra_ids=common.NUM_SENTINELS)
  source = corpus_source(offline_corpus)
  seqio.TaskRegistry.add(
      prefix + "_span_corruption", source=source,
      preprocessors=_SPAN_CORRUPTION,
      output_features=common.output_features(vocabulary), metric_fns=[])
  lm_preprocessors, lm_features = _language_modelling(vocabulary)
  seqio.TaskRegistry.add(
      prefix + "_lm", source=source, preprocessors=lm_preprocessors,
      output_features=lm_features, metric_fns=[])
  return vocabulary


DEFAULT_CORPUS_VOCABULARY = _add_offline_corpus_tasks(
    "mtf_switch_default", default_corpus.DEFAULT)
CODE_CORPUS_VOCABULARY = _add_offline_corpus_tasks(
    "mtf_switch_code", code_corpus.CODE)
