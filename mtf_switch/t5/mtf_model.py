"""T5's Python API for Switch models: `t5.models.MtfModel`, also on a CPU.

Many T5 users drive models from Python or a notebook, not the binary:

  import mtf_switch.tasks
  from mtf_switch.t5 import mtf_model
  tf.disable_eager_execution()
  gin.parse_config_file("models/switch_tiny.gin")
  model = mtf_model.MtfModel("runs/api", mesh_shape="batch:2",
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

A checkpoint of mtf_switch's main job (`python -m
mtf_switch.training.train`) reads with `from_main_job.gin` parsed first:
its weights are float32, T5's default is bfloat16.  Before building each
estimator, `MtfModel` compares the checkpoint it will read with T5's
dtype and vocabulary, and on a mismatch raises
`checkpoint_check.CheckpointMismatchError` naming the binding that fixes
it, where T5 would fail later without naming it:

  gin.parse_config_file("from_main_job.gin")
  model = mtf_model.MtfModel("runs/switch_tiny", mesh_shape="batch:2",
                            layout_rules="batch:batch;experts:batch",
                            batch_size=16, sequence_length={"inputs": 64,
                                                            "targets": 16})
  scores, targets = model.score(
      mixture_or_task_name="mtf_switch_default_span_corruption",
      mixture_or_task_split="validation", vocabulary=seqio.get_mixture_or_task(
          "mtf_switch_default_span_corruption").output_features[
              "targets"].vocabulary)

`predict`, `score` (on strings) and `export` read T5's default
vocabulary, which lives on GCS, unless given one: pass the task's
(`seqio.get_mixture_or_task(name).output_features["targets"].vocabulary`).
"""
import os

from mesh_tensorflow.transformer import utils as mtf_utils
import t5.models
from t5.models import utils as t5_utils
import tensorflow.compat.v1 as tf

from mtf_switch.t5 import checkpoint_check


class _DecodedOutsideTheGraph:
  """A vocabulary without `decode_tf`, so that mesh-tensorflow's scoring
  returns token ids (see the module docstring); all else is the wrapped
  vocabulary's."""

  def __init__(self, vocabulary):
    self._vocabulary = vocabulary

  @property
  def wrapped(self):
    """The vocabulary wrapped."""
    return self._vocabulary

  def __getattr__(self, name):
    if name == "decode_tf":
      raise AttributeError(name)
    return getattr(self._vocabulary, name)


def _unwrapped(vocabulary):
  """The vocabulary (or pair) that `score` wrapped, as the task has it."""
  if isinstance(vocabulary, tuple):
    return tuple(_unwrapped(v) for v in vocabulary)
  return getattr(vocabulary, "wrapped", vocabulary)


class MtfModel(t5.models.MtfModel):
  """`t5.models.MtfModel` that also runs on a local disk and a CPU."""

  def __init__(self, model_dir, tpu=None, **kwargs):
    super().__init__(model_dir, tpu, **kwargs)

  def estimator(self, vocabulary, init_checkpoint=None, disable_tpu=False,
                score_in_predict_mode=False, sequence_length=None):
    """As T5's, having checked the checkpoint that the estimator will read
    (`checkpoint_check`): the latest of model_dir if any (resuming,
    evaluating, scoring; an evaluation of older ones reads checkpoints of
    the same dtypes), else init_checkpoint (fine-tuning).

    Raises:
      checkpoint_check.CheckpointMismatchError: naming the binding to add,
        if T5 would read the checkpoint's weights in another dtype, or with
        another vocabulary than its run recorded.
    """
    estimator = super().estimator(vocabulary, init_checkpoint, disable_tpu,
                                  score_in_predict_mode, sequence_length)
    checkpoint = (tf.train.latest_checkpoint(self._model_dir)
                  or init_checkpoint)
    if checkpoint:
      checkpoint_check.check_vocabulary(checkpoint, _unwrapped(vocabulary))
      # After T5's estimator(): off TPU it binds its slice and activation
      # dtypes, so gin now holds the dtypes of this estimator's graph.
      checkpoint_check.check_master_dtype(
          checkpoint, mtf_utils.get_variable_dtype().master_dtype)
    return estimator

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
