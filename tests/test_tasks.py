"""The task registry on mock TFDS data, the default corpus tasks, errors."""
import re

import helpers  # noqa: F401  (graph mode, compat shim)
import pytest
import seqio
import tensorflow_datasets as tfds

import mtf_switch.tasks  # noqa: F401  (registers the tasks)
from mtf_switch.tasks import common
from mtf_switch.tasks import finetuning
from mtf_switch.tasks import pretraining

C4_LENGTHS = {"inputs": 512, "targets": 114}
FINETUNE_LENGTHS = {"inputs": 128, "targets": 32}
EOS = 1


def _names(prefix):
  return sorted(n for n in seqio.TaskRegistry.names() if n.startswith(prefix))


FINETUNING_TASKS = sorted(
    set(_names("mtf_switch_")) - set(_names("mtf_switch_mc4."))
    - set(_names("mtf_switch_default_")) - set(_names("mtf_switch_code_"))
    - {"mtf_switch_c4_span_corruption", "mtf_switch_copy_words"})


def _check_examples(dataset, lengths, count=3):
  examples = list(tfds.as_numpy(dataset.take(count)))
  assert examples
  for ex in examples:
    for feature, max_length in lengths.items():
      tokens = ex[feature]
      assert tokens.dtype.kind == "i", feature
      assert 0 < len(tokens) <= max_length, (feature, len(tokens))
      assert tokens[-1] == EOS, feature
  return examples


def test_every_table5_family_is_registered():
  for name in ("mtf_switch_glue_cola", "mtf_switch_super_glue_rte",
               "mtf_switch_squad", "mtf_switch_xsum",
               "mtf_switch_cnn_dailymail", "mtf_switch_anli_r3",
               "mtf_switch_arc_challenge", "mtf_switch_winogrande",
               "mtf_switch_web_questions", "mtf_switch_natural_questions",
               "mtf_switch_trivia_qa"):
    assert name in FINETUNING_TASKS
  assert len(_names("mtf_switch_mc4.")) == len(pretraining.MC4_LANGUAGES)


# The mC4 tasks come out of one loop: a few languages through the whole
# pipeline (first, last, a hyphenated code), all of them checked below.
MC4_SAMPLE = ["mtf_switch_mc4.af", "mtf_switch_mc4.zu",
              "mtf_switch_mc4.zh_Latn"]


def _tfds_splits(task_name):
  """The task's {split: TFDS split}; seqio keeps a plain map private."""
  loader = seqio.get_mixture_or_task(task_name).source.tfds_dataset
  return loader._split_map  # pylint: disable=protected-access


def test_every_mc4_task_reads_its_languages_splits():
  for language in pretraining.MC4_LANGUAGES:
    name = "mtf_switch_mc4.%s" % language.replace("-", "_")
    task = seqio.get_mixture_or_task(name)
    assert task.source.tfds_dataset.name == "c4/multilingual:3.1.0"
    assert _tfds_splits(name) == {"train": language,
                                  "validation": language + "-validation"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mtf_switch_c4_span_corruption"] +
                         MC4_SAMPLE)
def test_pretraining_task_yields_span_corruption_examples(name):
  task = seqio.get_mixture_or_task(name)
  with tfds.testing.mock_data(num_examples=8):
    dataset = task.get_dataset(C4_LENGTHS, split="train", shuffle=False,
                               use_cached=False,
        try_in_mem_cache=False)
    examples = _check_examples(dataset, C4_LENGTHS)
  sentinel = task.output_features["inputs"].vocabulary.vocab_size - 1
  assert any(sentinel in ex["inputs"] for ex in examples)


@pytest.mark.slow
@pytest.mark.parametrize("name", FINETUNING_TASKS)
def test_finetuning_task_yields_text_to_text_examples(name):
  task = seqio.get_mixture_or_task(name)
  split = ([s for s in task.splits if s.startswith("validation")]
           or ["test"])[0]
  with tfds.testing.mock_data(num_examples=4):
    dataset = task.get_dataset(FINETUNE_LENGTHS, split=split,
                               shuffle=False, use_cached=False,
        try_in_mem_cache=False)
    _check_examples(dataset, FINETUNE_LENGTHS, count=2)


@pytest.mark.slow
@pytest.mark.parametrize("name,lengths", [
    ("mtf_switch_glue", FINETUNE_LENGTHS),
    ("mtf_switch_super_glue", FINETUNE_LENGTHS),
    ("mtf_switch_mc4", C4_LENGTHS)])
def test_mixture_yields_examples(name, lengths, monkeypatch):
  # Mixing rates read split sizes from TFDS metadata, which lives on GCS:
  # give every mocked split the size of the mock.
  monkeypatch.setattr(seqio.TfdsDataSource, "num_input_examples",
                      lambda self, split: 4)
  mixture = seqio.get_mixture_or_task(name)
  if name == "mtf_switch_mc4":
    # Its 101 pipelines take minutes to build: mix the sample's languages
    # at the registered mixture's rates.
    mixture = seqio.Mixture(
        "mtf_switch_mc4_sample",
        [(t, mixture.get_rate(seqio.get_mixture_or_task(t)))
         for t in MC4_SAMPLE])
  with tfds.testing.mock_data(num_examples=4):
    dataset = mixture.get_dataset(lengths, split="train", shuffle=False,
                                  use_cached=False,
        try_in_mem_cache=False)
    _check_examples(dataset, lengths, count=4)


def test_registered_splits_are_those_tfds_has():
  """TFDS's metadata is on GCS: the splits are listed by hand (from the
  TFDS catalog), so a wrong one only fails on real data."""
  splits = _tfds_splits
  assert splits("mtf_switch_winogrande") == {"train": "train_xl",
                                             "validation": "validation"}
  assert tuple(splits("mtf_switch_web_questions")) == ("train", "test")
  for name in ("mtf_switch_natural_questions", "mtf_switch_squad"):
    assert tuple(splits(name)) == ("train", "validation"), name
  glue = [t.name for t in seqio.get_mixture_or_task("mtf_switch_glue").tasks]
  for name in ("mnli_matched", "mnli_mismatched"):
    assert tuple(splits("mtf_switch_glue_" + name)) == ("validation", "test")
    assert "mtf_switch_glue_" + name not in glue  # nothing to train on
  assert "mtf_switch_glue_mnli" in glue


def test_mc4_mixture_rates_follow_mt5_temperature(monkeypatch):
  """mT5: languages sampled with probability proportional to n ** 0.3."""
  sizes = {"train": 0}

  def fake_size(source, split):
    sizes["train"] += 1000  # a different size for each language
    return sizes[split]
  monkeypatch.setattr(seqio.TfdsDataSource, "num_input_examples", fake_size)
  mixture = seqio.get_mixture_or_task("mtf_switch_mc4")
  assert len(mixture.tasks) == len(pretraining.MC4_LANGUAGES)
  for task in mixture.tasks[:5]:
    before = sizes["train"]
    rate = mixture.get_rate(task)
    assert rate == pytest.approx((before + 1000) ** 0.3)


def test_default_corpus_tasks_tokenize_offline():
  for name, lengths in (("mtf_switch_default_span_corruption",
                         {"inputs": 64, "targets": 16}),
                        ("mtf_switch_default_lm", {"targets": 32})):
    dataset = seqio.get_mixture_or_task(name).get_dataset(
        lengths, split="validation", shuffle=False, use_cached=False,
        try_in_mem_cache=False)
    _check_examples(dataset, lengths)


def test_code_corpus_tasks_read_a_built_corpus_in_order(tmp_path,
                                                       monkeypatch):
  """The code corpus's tasks read <data dir>/code_corpus_v1 (built there on
  first use; here a small one stands in) with the shipped vocabulary."""
  from mtf_switch.corpora import code_corpus  # pylint: disable=g-import-not-at-top
  from mtf_switch.corpora import default_corpus  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("MTF_SWITCH_DATA_DIR", str(tmp_path))
  documents = ["def f%d(x):\n    return x + %d\n" % (i, i)
               for i in range(300)]
  default_corpus.build(str(tmp_path / code_corpus.NAME), documents, hash_order=True)
  validation = default_corpus.read_split(str(tmp_path / code_corpus.NAME),
                                 "validation")
  assert validation and validation == sorted(validation,
                                             key=default_corpus._text_hash)
  for name, lengths in (("mtf_switch_code_span_corruption",
                         {"inputs": 64, "targets": 16}),
                        ("mtf_switch_code_lm", {"targets": 32})):
    task = seqio.get_mixture_or_task(name)
    dataset = task.get_dataset(lengths, split="train", shuffle=False,
                               use_cached=False, try_in_mem_cache=False)
    examples = _check_examples(dataset, lengths)
    vocabulary = task.output_features["targets"].vocabulary
    assert "return" in vocabulary.decode(examples[0]["targets"].tolist())


def test_unknown_task_suggests_close_names():
  with pytest.raises(ValueError, match=r"'mtf_switch_super_glu'.*did you mean"
                     r".*mtf_switch_super_glue"):
    common.get_task_or_mixture("mtf_switch_super_glu")


def test_missing_tfds_data_dir_is_named(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
    common.set_tfds_data_dir(missing)


def test_corrupt_vocabulary_file_is_refused_with_its_path(tmp_path):
  corrupt = tmp_path / "broken.model"
  corrupt.write_bytes(b"this is not a sentencepiece model")
  with pytest.raises(ValueError, match="broken.model.*not a valid"):
    common.sentencepiece_vocabulary(str(corrupt))
  with pytest.raises(FileNotFoundError, match="absent.model"):
    common.sentencepiece_vocabulary(str(tmp_path / "absent.model"))


def test_finetuning_preprocessors_make_the_expected_text():
  import tensorflow.compat.v2 as tf  # pylint: disable=g-import-not-at-top
  arc = finetuning.arc(tf.data.Dataset.from_tensors({
      "question": "Which is a gas?", "answerKey": tf.constant(1, tf.int64),
      "choices": {"text": ["rock", "air"],
                  "label": tf.constant([0, 1], tf.int64)}}))
  example, = list(tfds.as_numpy(arc))
  assert example["inputs"] == b"arc question: Which is a gas? (A) rock (B) air"
  assert example["targets"] == b"B"


def test_span_corruption_noises_15_percent_in_spans_of_3_on_average():
  """T5's objective as the paper uses it (Section 3; Raffel et al. 2020):
  noise density 0.15, mean noise span length 3, on the default corpus."""
  task = seqio.get_mixture_or_task("mtf_switch_default_span_corruption")
  vocabulary = task.output_features["targets"].vocabulary
  first_sentinel = vocabulary.vocab_size - 100  # T5's extra ids, at the top
  noise = kept = spans = 0
  for example in tfds.as_numpy(task.get_dataset(
      C4_LENGTHS, split="validation", shuffle=False, use_cached=False,
      try_in_mem_cache=False)):
    inputs = example["inputs"][example["inputs"] != EOS]
    targets = example["targets"][example["targets"] != EOS]
    input_sentinels = inputs >= first_sentinel
    spans += int(input_sentinels.sum())
    kept += int((~input_sentinels).sum())
    noise += int((targets < first_sentinel).sum())
    # Each noise span is replaced by one sentinel in the inputs and opens
    # with the same sentinel in the targets.
    assert list(inputs[input_sentinels]) == list(
        targets[targets >= first_sentinel])
  assert spans > 100
  assert noise / (noise + kept) == pytest.approx(0.15, abs=0.01)
  assert noise / spans == pytest.approx(3.0, abs=0.15)


# ------------- What each fine-tuning family makes of a raw example -------------
# On mock TFDS data (random, but deterministic: every load of a split yields
# the same examples), each task's output is compared with what the test
# computes by hand from the raw example it read: the text before tokenization
# (`*_pretokenized`, which seqio's tokenize keeps), the tokens decoded with the
# task's vocabulary, and the extra features the metrics read.
CONTENT_LENGTHS = {"inputs": 4096, "targets": 1024}  # long enough: no trims


def _pad_punctuation(text):
  """T5's _pad_punctuation (SQuAD), in Python: RE2's [[:punct:]] is ASCII."""
  text = re.sub(r"([!-/:-@\[-`{-~])", r" \1 ", text)
  return re.sub(r"\s+", " ", text)


def _text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else value


def _raw_and_processed(name, tfds_name, split, num_examples):
  """(raw mock examples of tfds_name's split read by the test, the task's
  examples of the same split), in order."""
  task = seqio.get_mixture_or_task(name)
  assert task.source.tfds_dataset.name == tfds_name
  with tfds.testing.mock_data(num_examples=num_examples):
    raw, info = tfds.load(tfds_name, split=split, shuffle_files=False,
                          with_info=True)
    raw = list(tfds.as_numpy(raw))
    processed = list(tfds.as_numpy(task.get_dataset(
        CONTENT_LENGTHS, split=split, shuffle=False, use_cached=False,
        try_in_mem_cache=False)))
  assert len(raw) == len(processed) == num_examples
  return task, info.features, raw, processed


def _assert_text(task, example, inputs, targets):
  """The task's example holds `inputs` -> `targets`, as text and as tokens
  (SentencePiece collapses runs of spaces), each closed by EOS."""
  assert _text(example["inputs_pretokenized"]) == inputs
  assert _text(example["targets_pretokenized"]) == targets
  for feature, text in (("inputs", inputs), ("targets", targets)):
    tokens = example[feature].tolist()
    assert tokens[-1] == EOS and EOS not in tokens[:-1], feature
    vocabulary = task.output_features[feature].vocabulary
    assert vocabulary.decode(tokens[:-1]) == " ".join(text.split()), feature


def _check_classification(name, tfds_name, split, expected_fn,
                          num_examples=8):
  """expected_fn(raw example, TFDS features) -> (inputs, targets); the mock
  examples must carry at least two different targets, so that a wrong label
  mapping shows."""
  task, features, raw, processed = _raw_and_processed(
      name, tfds_name, split, num_examples)
  targets = set()
  for x, example in zip(raw, processed):
    inputs, target = expected_fn(x, features)
    _assert_text(task, example, inputs, target)
    targets.add(target)
  assert len(targets) >= 2, targets
  return raw, processed


def test_anli_tasks_read_their_rounds():
  for r in (1, 2, 3):
    task = seqio.get_mixture_or_task("mtf_switch_anli_r%d" % r)
    assert task.source.tfds_dataset.name == "anli/r%d:0.1.0" % r


def test_anli_maps_premise_and_hypothesis_to_the_label_word():
  words = {"e": "entailment", "n": "neutral", "c": "contradiction"}
  _check_classification(
      "mtf_switch_anli_r3", "anli/r3:0.1.0", "validation",
      lambda x, f: ("anli premise: %s hypothesis: %s" % (
          _text(x["context"]), _text(x["hypothesis"])),
                    words[f["label"].int2str(x["label"])]))


def test_winogrande_maps_sentence_and_options_to_the_right_options_name():
  # TFDS's label names are WinoGrande's answers "1" and "2": the target
  # names the option that fills the blank.
  _check_classification(
      "mtf_switch_winogrande", "winogrande:1.1.0", "validation",
      lambda x, f: ("winogrande sentence: %s option1: %s option2: %s" % (
          _text(x["sentence"]), _text(x["option1"]), _text(x["option2"])),
                    "option" + f["label"].int2str(x["label"])))


def test_arc_letters_the_choices_in_order_and_answers_with_a_letter():
  letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz"
  _check_classification(
      "mtf_switch_arc_easy", "ai2_arc/ARC-Easy:1.0.0", "validation",
      lambda x, f: ("arc question: %s %s" % (_text(x["question"]), " ".join(
          "(%s) %s" % (letters[i], _text(t))
          for i, t in enumerate(x["choices"]["text"]))),
                    f["answerKey"].int2str(x["answerKey"])))


def test_glue_mnli_follows_t5s_format():
  # T5's glue preprocessor: the benchmark, then the features sorted by name.
  raw, processed = _check_classification(
      "mtf_switch_glue_mnli", "glue/mnli:1.0.0", "validation_matched",
      lambda x, f: ("mnli hypothesis: %s premise: %s" % (
          _text(x["hypothesis"]), _text(x["premise"])),
                    ["entailment", "neutral", "contradiction"][x["label"]]))
  assert [ex["idx"] for ex in processed] == [x["idx"] for x in raw]


def test_super_glue_cb_follows_t5s_format():
  raw, processed = _check_classification(
      "mtf_switch_super_glue_cb", "super_glue/cb:1.0.2", "validation",
      lambda x, f: ("cb hypothesis: %s premise: %s" % (
          _text(x["hypothesis"]), _text(x["premise"])),
                    ["entailment", "contradiction", "neutral"][x["label"]]))
  assert [ex["idx"] for ex in processed] == [x["idx"] for x in raw]


def _check_qa(name, tfds_name, split, expected_fn, num_examples=3):
  """expected_fn(raw example) -> (inputs, targets, all answers); the answers
  are what the metric gets as targets (through the task's postprocessor)."""
  task, _, raw, processed = _raw_and_processed(name, tfds_name, split,
                                               num_examples)
  for x, example in zip(raw, processed):
    inputs, targets, answers = expected_fn(x)
    assert len(answers) > 1  # the mock has several: the first one is picked
    _assert_text(task, example, inputs, targets)
    assert [_text(a) for a in example["answers"]] == answers
    assert task.postprocess_fn(example["targets_pretokenized"],
                               example=example, is_target=True) == answers


def test_trivia_qa_answers_with_its_value_and_accepts_its_aliases():
  _check_qa(
      "mtf_switch_trivia_qa", "trivia_qa/unfiltered.nocontext:1.1.0",
      "validation",
      lambda x: ("trivia_qa question: " + _text(x["question"]),
                 _text(x["answer"]["value"]),
                 [_text(x["answer"]["value"])] +
                 [_text(a) for a in x["answer"]["aliases"]]))


def test_natural_questions_answers_with_its_first_answer():
  _check_qa(
      "mtf_switch_natural_questions", "natural_questions_open:1.0.0",
      "validation",
      lambda x: ("nq question: " + _text(x["question"]),
                 _text(x["answer"][0]), [_text(a) for a in x["answer"]]))


def test_web_questions_answers_with_its_first_answer():
  _check_qa(
      "mtf_switch_web_questions", "web_questions:1.0.0", "train",
      lambda x: ("web_questions question: " + _text(x["question"]),
                 _text(x["answers"][0]), [_text(a) for a in x["answers"]]))


def test_squad_follows_t5s_format():
  def expected(x):
    answers = [_pad_punctuation(_text(a)) for a in x["answers"]["text"]]
    return (re.sub(r"\s+", " ", "question: %s context: %s" % (
        _pad_punctuation(_text(x["question"])),
        _pad_punctuation(_text(x["context"])))), answers[0], answers)
  _check_qa("mtf_switch_squad", "squad/v1.1:3.0.0", "validation", expected)


@pytest.mark.parametrize("name,tfds_name,article,summary", [
    ("mtf_switch_xsum", "xsum:1.1.0", "document", "summary"),
    ("mtf_switch_cnn_dailymail", "cnn_dailymail:3.4.0", "article",
     "highlights")])
def test_summarization_maps_the_article_to_its_summary(name, tfds_name,
                                                       article, summary):
  task, _, raw, processed = _raw_and_processed(name, tfds_name, "validation",
                                               num_examples=3)
  for x, example in zip(raw, processed):
    _assert_text(task, example, "summarize: " + _text(x[article]),
                 _text(x[summary]))
