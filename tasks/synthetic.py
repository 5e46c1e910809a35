"""A small offline task that needs no download: copying word sequences.

`mtf_switch_copy_words`: inputs are sequences of 3 to 8 words drawn from a
fixed list with a fixed seed, targets repeat them; byte-level vocabulary.
It exists to exercise the T5 binary path (train, eval, decode) anywhere.
Its metrics: sequence accuracy, and the word-level edit distance to the
target (`mean_edit` etc.), which falls long before whole sequences come
out right.
"""
import numpy as np
import seqio
from t5.evaluation import metrics
import tensorflow.compat.v2 as tf

WORDS = ("switch expert router token capacity layer mesh tensor batch group "
         "model sparse dense gate load balance drop train eval decode").split()
NUM_EXAMPLES = {"train": 2048, "validation": 64}
VOCABULARY = seqio.ByteVocabulary()


def copy_words_texts(split, seed=0):
  """The split's texts (inputs and targets alike), equal on every machine."""
  rng = np.random.RandomState({"train": seed, "validation": seed + 1}[split])
  texts = [" ".join(rng.choice(WORDS, size=rng.randint(3, 9)))
           for _ in range(NUM_EXAMPLES[split])]
  return texts


def _dataset_fn(split, shuffle_files=False, seed=None):
  del shuffle_files, seed  # one deterministic file per split
  texts = copy_words_texts(split)
  return tf.data.Dataset.from_tensor_slices({"inputs": texts,
                                             "targets": texts})


seqio.TaskRegistry.add(
    "mtf_switch_copy_words",
    source=seqio.FunctionDataSource(_dataset_fn,
                                    splits=tuple(NUM_EXAMPLES)),
    preprocessors=[seqio.preprocessors.tokenize,
                   seqio.preprocessors.append_eos_after_trim],
    output_features={
        "inputs": seqio.Feature(VOCABULARY, add_eos=True),
        "targets": seqio.Feature(VOCABULARY, add_eos=True),
    },
    metric_fns=[metrics.sequence_accuracy, metrics.edit_distance])
