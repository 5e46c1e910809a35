"""Pre-training tasks: C4 span corruption, mC4, and the offline default corpus.

- `mtf_switch_c4_span_corruption`: T5's objective on C4 (15% noise, mean
  span 3; inputs 512 -> targets 114 tokens), the paper's pre-training task
  (Section 3).
- `mtf_switch_mc4.<language>` for each of mC4's languages and the mixture
  `mtf_switch_mc4`, sampled as mT5 does: rate proportional to the number of
  examples to the power 0.3 (temperature 1 / 0.3), for mSwitch (Section 5.6).
- `mtf_switch_default_span_corruption` and `mtf_switch_default_lm`: the
  same objective, and plain language modelling, on the offline default
  corpus (`mtf_switch.corpus`) with its own small vocabulary.
"""
import functools

import seqio
from t5.data import preprocessors
import tensorflow.compat.v2 as tf
from tensorflow_datasets.text import c4 as tfds_c4

from mtf_switch import corpus
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


def _default_corpus(split, shuffle_files=False, seed=None):
  """The offline corpus's documents as {"text": ...}, built on first use."""
  del shuffle_files, seed  # one file per split
  corpus_dir = corpus.ensure_built()
  return tf.data.TFRecordDataset(
      "%s/%s.tfrecord" % (corpus_dir, split)).map(
          lambda record: tf.io.parse_single_example(
              record, {"text": tf.io.FixedLenFeature([], tf.string)}))


DEFAULT_CORPUS_VOCABULARY = seqio.SentencePieceVocabulary(
    corpus.VOCABULARY_PATH, extra_ids=common.NUM_SENTINELS)
_DEFAULT_CORPUS_SOURCE = seqio.FunctionDataSource(
    _default_corpus, splits=corpus.SPLITS)

seqio.TaskRegistry.add(
    "mtf_switch_default_span_corruption",
    source=_DEFAULT_CORPUS_SOURCE,
    preprocessors=_SPAN_CORRUPTION,
    output_features=common.output_features(DEFAULT_CORPUS_VOCABULARY),
    metric_fns=[])

seqio.TaskRegistry.add(
    "mtf_switch_default_lm",
    source=_DEFAULT_CORPUS_SOURCE,
    preprocessors=[
        functools.partial(preprocessors.rekey, key_map={"targets": "text"}),
        seqio.preprocessors.tokenize,
        seqio.CacheDatasetPlaceholder(),
        preprocessors.reduce_concat_tokens,
        preprocessors.split_tokens_to_targets_length,
        seqio.preprocessors.append_eos_after_trim,
    ],
    output_features={"targets": seqio.Feature(DEFAULT_CORPUS_VOCABULARY,
                                              add_eos=True)},
    metric_fns=[])
