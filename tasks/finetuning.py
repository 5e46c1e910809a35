"""Fine-tuning tasks of the paper's Table 5, with the mixtures T5 users expect.

T5's own preprocessors, postprocessors and metrics wherever they exist
(GLUE, SuperGLUE, SQuAD, summarization); small text-to-text mappings for
the rest.  Names are T5's with an `mtf_switch_` prefix, so they live beside
`t5.data.mixtures` without clashing; all use `common.ENGLISH_VOCABULARY`.

- GLUE and SuperGLUE: every config as `mtf_switch_glue_<name>` and
  `mtf_switch_super_glue_<name>`, and the mixtures `mtf_switch_glue` and
  `mtf_switch_super_glue` (rate: number of examples, as T5's
  `*_proportional` mixtures).
- `mtf_switch_squad`, `mtf_switch_xsum`, `mtf_switch_cnn_dailymail`.
- `mtf_switch_anli_r1/2/3`, `mtf_switch_arc_easy`, `mtf_switch_arc_challenge`,
  `mtf_switch_winogrande`.
- Closed-book QA (no context): `mtf_switch_web_questions`,
  `mtf_switch_natural_questions`, `mtf_switch_trivia_qa`.
- Offline, with the default corpus's vocabulary:
  `mtf_switch_default_docstring_summary` (a docstring's body in, its summary
  line out; ROUGE), to fine-tune a model pre-trained on the default corpus
  on any machine.
"""
import functools

import seqio
from t5.data import glue_utils
from t5.data import postprocessors
from t5.data import preprocessors
from t5.evaluation import metrics
import tensorflow.compat.v2 as tf
import tensorflow_datasets as tfds

from mtf_switch.corpora import default_corpus
from mtf_switch.tasks import common
from mtf_switch.tasks import pretraining

_FEATURES = common.output_features(common.ENGLISH_VOCABULARY)
_TAIL = [seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
         seqio.preprocessors.append_eos_after_trim]


# Listed, not read from TFDS's metadata: that is on GCS, out of reach offline.
_SPLITS = ("train", "validation", "test")


def _add(name, tfds_name, preprocessor, metric_fns, postprocess_fn=None,
         splits=_SPLITS):
  seqio.TaskRegistry.add(
      name, source=seqio.TfdsDataSource(tfds_name=tfds_name, splits=splits),
      preprocessors=[preprocessor] + _TAIL, output_features=_FEATURES,
      metric_fns=metric_fns, postprocess_fn=postprocess_fn)


# ---------------------------------- GLUE -------------------------------------
GLUE = [b for b in tfds.text.glue.Glue.builder_configs.values()
        if b.name != "ax"]
# TFDS's mnli_matched and mnli_mismatched configs are MNLI's evaluation
# sets alone: no train split, so they stay out of the training mixture (T5
# gives them rate 0).
_GLUE_SPLITS = {
    "mnli": ("train", "validation_matched", "validation_mismatched",
             "test_matched", "test_mismatched"),
    "mnli_matched": ("validation", "test"),
    "mnli_mismatched": ("validation", "test"),
}
for _b in GLUE:
  _add("mtf_switch_glue_%s" % _b.name, "glue/%s:1.0.0" % _b.name,
       glue_utils.get_glue_text_preprocessor(_b),
       glue_utils.get_glue_metric(_b.name),
       glue_utils.get_glue_postprocess_fn(_b),
       splits=_GLUE_SPLITS.get(_b.name, _SPLITS))
seqio.MixtureRegistry.add(
    "mtf_switch_glue", ["mtf_switch_glue_%s" % b.name for b in GLUE
                        if "train" in _GLUE_SPLITS.get(b.name, _SPLITS)],
    default_rate=seqio.mixing_rate_num_examples)

# -------------------------------- SuperGLUE ----------------------------------
# Diagnostics (axb, axg) have only test splits and WSC needs T5's span
# handling: as in T5's super_glue_v102_proportional, they are left out.
SUPER_GLUE = [b for b in tfds.text.super_glue.SuperGlue.builder_configs.values()
              if b.name not in ("axb", "axg") and "wsc" not in b.name]
for _b in SUPER_GLUE:
  _add("mtf_switch_super_glue_%s" % _b.name, "super_glue/%s:1.0.2" % _b.name,
       glue_utils.get_glue_text_preprocessor(_b),
       glue_utils.get_super_glue_metric(_b.name),
       glue_utils.get_glue_postprocess_fn(_b))
seqio.MixtureRegistry.add(
    "mtf_switch_super_glue",
    ["mtf_switch_super_glue_%s" % b.name for b in SUPER_GLUE],
    default_rate=seqio.mixing_rate_num_examples)

# ------------------------ Reading comprehension, summaries ---------------------
_add("mtf_switch_squad", "squad/v1.1:3.0.0", preprocessors.squad,
     [metrics.squad], postprocessors.qa, splits=("train", "validation"))
_add("mtf_switch_xsum", "xsum:1.1.0",
     functools.partial(preprocessors.summarize, article_key="document",
                       summary_key="summary"), [metrics.rouge])
_add("mtf_switch_cnn_dailymail", "cnn_dailymail:3.4.0",
     functools.partial(preprocessors.summarize, article_key="article",
                       summary_key="highlights"), [metrics.rouge])


# ------------------------------ Classification -------------------------------
def _label_name(label, names):
  return tf.gather(tf.constant(names), label)


@seqio.map_over_dataset
def anli(x):
  return {
      "inputs": tf.strings.join(["anli premise:", x["context"],
                                 "hypothesis:", x["hypothesis"]],
                                separator=" "),
      "targets": _label_name(x["label"],
                             ["entailment", "neutral", "contradiction"]),
  }


@seqio.map_over_dataset
def arc(x):
  """Question and lettered choices in; the right choice's letter out."""
  letters = tf.strings.as_string(tf.range(tf.size(x["choices"]["text"])))
  letters = tf.strings.unicode_encode(
      tf.expand_dims(tf.strings.to_number(letters, tf.int32) + ord("A"), 1),
      "UTF-8")
  options = tf.strings.reduce_join(
      tf.strings.join(["(", letters, ") ", x["choices"]["text"]]),
      separator=" ")
  return {
      "inputs": tf.strings.join(["arc question:", x["question"], options],
                                separator=" "),
      "targets": _label_name(x["answerKey"], ["A", "B", "C", "D", "E"]),
  }


@seqio.map_over_dataset
def winogrande(x):
  return {
      "inputs": tf.strings.join(["winogrande sentence:", x["sentence"],
                                 "option1:", x["option1"], "option2:",
                                 x["option2"]], separator=" "),
      "targets": _label_name(x["label"], ["option1", "option2"]),
  }


for _round in (1, 2, 3):
  _add("mtf_switch_anli_r%d" % _round, "anli/r%d:0.1.0" % _round, anli,
       [metrics.accuracy])
_add("mtf_switch_arc_easy", "ai2_arc/ARC-Easy:1.0.0", arc, [metrics.accuracy])
_add("mtf_switch_arc_challenge", "ai2_arc/ARC-Challenge:1.0.0", arc,
     [metrics.accuracy])
# TFDS's WinoGrande trains on one of five sizes; the largest (XL, 40k
# examples), as T5 fine-tunes on it.
_add("mtf_switch_winogrande", "winogrande:1.1.0", winogrande,
     [metrics.accuracy],
     splits={"train": "train_xl", "validation": "validation"})


# ----------------------------- Closed-book QA --------------------------------
def closed_book_qa(prefix, answers_fn):
  """Question in, first answer out; all answers kept for the metric."""
  @seqio.map_over_dataset
  def fn(x):
    answers = answers_fn(x)
    return {"inputs": tf.strings.join([prefix, x["question"]], separator=" "),
            "targets": answers[0], "answers": answers}
  return fn


# WebQuestions has no validation split, NQ-open no test split in TFDS.
_add("mtf_switch_web_questions", "web_questions:1.0.0",
     closed_book_qa("web_questions question:", lambda x: x["answers"]),
     [metrics.squad], postprocessors.qa, splits=("train", "test"))
_add("mtf_switch_natural_questions", "natural_questions_open:1.0.0",
     closed_book_qa("nq question:", lambda x: x["answer"]),
     [metrics.squad], postprocessors.qa, splits=("train", "validation"))
_add("mtf_switch_trivia_qa", "trivia_qa/unfiltered.nocontext:1.1.0",
     closed_book_qa("trivia_qa question:",
                    lambda x: tf.concat([[x["answer"]["value"]],
                                         x["answer"]["aliases"]], 0)),
     [metrics.squad], postprocessors.qa, splits=["train", "validation"])


# ------------------------- Offline: docstring summaries ----------------------
SUMMARY_MAX_CHARS = 200


@seqio.map_over_dataset
def docstring_summary(x):
  """A docstring's body in, its summary line (first paragraph) out."""
  parts = tf.strings.split(x["text"], "\n\n", maxsplit=1)
  parts = tf.concat([parts, ["", ""]], 0)  # a one-paragraph text: no body
  return {"inputs": tf.strings.join(["summarize:", tf.strings.strip(
      parts[1])], separator=" "),
          "targets": tf.strings.strip(parts[0]), "body": parts[1]}


def _has_summary_and_body(x):
  summary_length = tf.strings.length(x["targets"])
  return tf.logical_and(
      tf.logical_and(summary_length > 0, summary_length <= SUMMARY_MAX_CHARS),
      tf.strings.length(tf.strings.strip(x["body"])) > 0)


# A generation task that runs anywhere, pre-training -> fine-tuning ->
# evaluation on one machine: the default corpus (mostly docstrings) with
# its own vocabulary, so that a model pre-trained on
# `mtf_switch_default_span_corruption` fine-tunes on it; ROUGE as for
# summarization (CNN/DailyMail, XSum).
seqio.TaskRegistry.add(
    "mtf_switch_default_docstring_summary",
    source=pretraining.corpus_source(default_corpus.DEFAULT),
    preprocessors=[
        docstring_summary,
        lambda ds: ds.filter(_has_summary_and_body),
    ] + _TAIL,
    output_features=common.output_features(
        pretraining.DEFAULT_CORPUS_VOCABULARY),
    metric_fns=[metrics.rouge])
