"""The task registry on mock TFDS data, the default corpus tasks, errors."""
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


def test_every_mc4_task_reads_its_languages_splits():
  for language in pretraining.MC4_LANGUAGES:
    task = seqio.get_mixture_or_task(
        "mtf_switch_mc4.%s" % language.replace("-", "_"))
    assert task.source.tfds_dataset.name == "c4/multilingual:3.1.0"
    # seqio exposes a plain {split: TFDS split} map only privately.
    splits = task.source.tfds_dataset._split_map  # pylint: disable=protected-access
    assert splits == {"train": language,
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
  split = [s for s in task.splits if s.startswith("validation")][0]
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
  from mtf_switch import code_corpus  # pylint: disable=g-import-not-at-top
  from mtf_switch import corpus  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("MTF_SWITCH_DATA_DIR", str(tmp_path))
  documents = ["def f%d(x):\n    return x + %d\n" % (i, i)
               for i in range(300)]
  corpus.build(str(tmp_path / code_corpus.NAME), documents, hash_order=True)
  validation = corpus.read_split(str(tmp_path / code_corpus.NAME),
                                 "validation")
  assert validation and validation == sorted(validation,
                                             key=corpus._text_hash)
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
