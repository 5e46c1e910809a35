"""T5's Python API for Switch models: `t5.models.MtfModel`, also on a CPU.

Many T5 users drive models from Python or a notebook, not the binary:

  import mtf_switch.tasks
  from mtf_switch.t5 import mtf_model
  tf.disable_eager_execution()
  gin.parse_config_file("models/switch_tiny.gin")
  model = mtf_model.MtfModel("runs/api", mesh_shape="batch:1,experts:2",
                            batch_size=8, sequence_length={"inputs": 32,
                                                           "targets": 32},
                            learning_rate_schedule=0.01)
  model.train("mtf_switch_copy_words", steps=100)
  model.eval("mtf_switch_copy_words", checkpoint_steps=-1)

`MtfModel` is T5's class (the same arguments and methods: train, eval,
predict, score, finetune, export) with what a run on a local disk and a
CPU needs and T5's class assumes away:

- `tpu` defaults to None (the mesh runs on the host's CPU);
- `eval` creates its summary directory before T5 writes the targets file
  into it (on GCS, directories need not exist; on a local disk they must);
- `score` keeps the scored targets as token ids until mesh-tensorflow's
  `save_scores` decodes them: off TPU, mesh-tensorflow turns them into
  text inside the graph whenever the vocabulary can (`decode_tf`), and
  `save_scores` then fails decoding that text again ("'bytes' object has
  no attribute 'tolist'").

`predict`, `score` (on strings) and `export` read T5's default
vocabulary, which lives on GCS, unless given one: pass the task's
(`seqio.get_mixture_or_task(name).output_features["targets"].vocabulary`).
"""
import os

import t5.models
from t5.models import utils as t5_utils
import tensorflow.compat.v1 as tf


class _DecodedOutsideTheGraph:
  """A vocabulary without `decode_tf`, so that mesh-tensorflow's scoring
  returns token ids (see the module docstring); all else is the wrapped
  vocabulary's."""

  def __init__(self, vocabulary):
    self._vocabulary = vocabulary

  def __getattr__(self, name):
    if name == "decode_tf":
      raise AttributeError(name)
    return getattr(self._vocabulary, name)


class MtfModel(t5.models.MtfModel):
  """`t5.models.MtfModel` that also runs on a local disk and a CPU."""

  def __init__(self, model_dir, tpu=None, **kwargs):
    super().__init__(model_dir, tpu, **kwargs)

  def eval(self, mixture_or_task_name, checkpoint_steps=None,
           summary_dir=None, split="validation", **kwargs):
    """As T5's, creating the summary directory (default
    `<model_dir>/<split>_eval`) first."""
    summary_dir = summary_dir or os.path.join(self._model_dir,
                                              "%s_eval" % split)
    tf.io.gfile.makedirs(summary_dir)
    return super().eval(mixture_or_task_name, checkpoint_steps, summary_dir,
                        split, **kwargs)

  def score(self, inputs=None, targets=None, mixture_or_task_name=None,
            mixture_or_task_split=None, scores_file=None, checkpoint_steps=-1,
            vocabulary=None):
    """As T5's: returns (scores, targets), the targets as text."""
    if vocabulary is None:
      vocabulary = t5_utils.get_vocabulary(mixture_or_task_name)
    if isinstance(vocabulary, tuple):
      vocabulary = tuple(_DecodedOutsideTheGraph(v) for v in vocabulary)
    else:
      vocabulary = _DecodedOutsideTheGraph(vocabulary)
    return super().score(inputs, targets, mixture_or_task_name,
                         mixture_or_task_split, scores_file, checkpoint_steps,
                         vocabulary)
