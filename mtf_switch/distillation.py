"""Distilling a Switch model into its FLOP-matched dense twin (Section 4.2).

The paper's recipe (Table 6): the student is the dense model of the same
FLOPs, initialized with the teacher's non-expert weights, and trained on

  loss = (1 - fraction_soft) * CE(labels) + fraction_soft * CE(teacher)

with fraction_soft = 0.25 (0.75 of the loss on the ground truth), where
CE(teacher) is the cross entropy against the teacher's probabilities.

`dense_twin(teacher)` builds the student: the teacher with each
SwitchFeedForward replaced by a dense FFN of the experts' width and
activation, so every other weight keeps its name and the student starts
from the teacher's attention, embeddings, norms and dense FFNs.
`Distillation` is the model the step trains: the student's variables under
their own names (its checkpoints are plain dense-model checkpoints), the
teacher's under `teacher/`, frozen, in evaluation mode.  Evaluation scores
the student alone.  Through T5's binary, distillation is mesh-tensorflow's
own `StudentTeacher` with `DenseTwinBitransformer` as the student (gin file
`distill/dense_student.gin`).
"""
import copy

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
from mesh_tensorflow.transformer import transformer_layers
import tensorflow.compat.v1 as tf

from mtf_switch import layers
from mtf_switch import models
from mtf_switch import routing

TEACHER_SCOPE = "teacher"
_DENSE_ACTIVATIONS = {"relu": "relu", "geglu": ["gelu", "linear"]}


def dense_twin(model):
  """The model with every Switch layer replaced by a dense FFN of the
  experts' width and activation: the FLOP-matched dense model.

  Args:
    model: a transformer.Bitransformer or Unitransformer.

  Returns:
    a new model of the same class; `model` is unchanged.
  """
  twin = copy.deepcopy(model)
  stacks = ([twin.encoder, twin.decoder]
            if isinstance(twin, transformer.Bitransformer) else [twin])
  for stack in stacks:
    _densify(stack.layer_stack)
  return twin


def _densify(layer_stack):
  # LayerStack keeps its layers in `_layers` and builds nothing before it
  # is called, so swapping them here is all a new stack would do.
  layer_stack._layers = [  # pylint: disable=protected-access
      _dense_ffn(layer) if isinstance(layer, layers.SwitchFeedForward)
      else layer for layer in layer_stack.layers]


@gin.configurable(module="mtf_switch")
class DenseTwinBitransformer(models.ScaledInitBitransformer):
  """The dense twin of the gin-configured Switch bitransformer.

  For T5's binary, whose distillation (`utils.run.model_type =
  "bi_student_teacher"`, mesh-tensorflow's `StudentTeacher`) builds the
  student from the same gin model as the teacher in the scope "student":
  binding `student/transformer.make_bitransformer.bitransformer_cls` to
  this class turns every Switch layer of the student into a dense FFN,
  whatever the model's stack (see gin/distill/dense_student.gin).
  """

  def __init__(self, encoder, decoder, shared_embedding=True,
               init_scale=1.0):
    super().__init__(encoder, decoder, shared_embedding=shared_embedding,
                     init_scale=init_scale)
    for stack in (self.encoder, self.decoder):
      _densify(stack.layer_stack)


def _dense_ffn(switch_layer):
  dense = transformer_layers.DenseReluDense(
      hidden_size=switch_layer.hidden_size,
      activation=_DENSE_ACTIVATIONS[switch_layer.activation])
  # The layer's name is its variable scope ("block_001/layer_003"): without
  # it, every replaced layer would share one set of weights.
  dense.set_name(switch_layer.name)
  return dense


@gin.configurable(module="mtf_switch")
class Distillation:
  """A dense student taught by a frozen Switch teacher (Section 4.2)."""

  def __init__(self, teacher, student=None, fraction_soft=0.25,
               temperature=1.0, init_student=True):
    """Records the two models and the loss's mix.

    Args:
      teacher: the Switch model (its weights come from a checkpoint).
      student: the student; default dense_twin(teacher).
      fraction_soft: weight of the cross entropy against the teacher's
        probabilities, in [0, 1] (the paper: 0.25).
      temperature: softmax temperature of both (the paper: 1).
      init_student: start the student from the teacher's non-expert
        weights (the paper's recipe); False starts it from scratch, Table
        6's "distillation" row without the initialization.

    Raises:
      ValueError: on a fraction_soft outside [0, 1] or temperature <= 0.
    """
    routing.check_rate(fraction_soft, "fraction_soft")
    if not temperature > 0:
      raise ValueError("temperature must be > 0, got %r" % (temperature,))
    self.teacher = teacher
    self.student = student or dense_twin(teacher)
    self.fraction_soft = fraction_soft
    self.temperature = temperature
    self.init_student = init_student

  def call_simple(self, inputs, targets, compute_loss,
                  mode=tf.estimator.ModeKeys.TRAIN,
                  variable_dtype=mtf.VariableDType(tf.float32), **kwargs):
    """The student's logits and, in training, the distillation loss.

    Outside training (and without a loss) this is the student alone.
    """
    student_logits, hard_loss = self.student.call_simple(
        inputs, targets, compute_loss=True, mode=mode,
        variable_dtype=variable_dtype, **kwargs)
    if not compute_loss or mode != tf.estimator.ModeKeys.TRAIN:
      return student_logits, hard_loss
    graph = inputs.mesh.graph
    student_variables = set(graph.trainable_variables)
    with tf.variable_scope(TEACHER_SCOPE):
      teacher_logits, _ = self.teacher.call_simple(
          inputs, targets, compute_loss=True,
          mode=tf.estimator.ModeKeys.EVAL, variable_dtype=variable_dtype,
          **kwargs)
    graph.make_variables_untrainable(
        [v for v in graph.trainable_variables if v not in student_variables])
    vocab_dim = student_logits.shape.dims[-1]
    soft_targets = mtf.stop_gradient(mtf.softmax(
        mtf.cast(teacher_logits, tf.float32) / self.temperature, vocab_dim))
    soft_loss = mtf.layers.softmax_cross_entropy_with_logits(
        mtf.cast(student_logits, tf.float32) / self.temperature,
        soft_targets, vocab_dim)
    weights = mtf.cast(mtf.greater(targets, 0), tf.float32)
    soft_loss = (mtf.reduce_sum(soft_loss * weights)
                 / self.student.loss_denominator(targets, 1))
    # temperature^2 keeps the soft term's gradient scale (Hinton et al.).
    return student_logits, (
        (1.0 - self.fraction_soft) * mtf.cast(hard_loss, tf.float32)
        + self.fraction_soft * self.temperature ** 2 * soft_loss)

  def init_assignment(self, step_graph, checkpoint):
    """What a new distillation run restores from the teacher's checkpoint:
    every teacher weight and, with init_student, each student weight whose
    name the checkpoint holds (all but the dense FFNs that replaced Switch
    layers).

    Returns:
      list of (checkpoint name, master variable) (see
      checkpoints.restore_weights).
    """
    names = set(tf.train.load_checkpoint(checkpoint)
                .get_variable_to_shape_map())
    prefix = TEACHER_SCOPE + "/"
    teacher = [(v.op.name[len(prefix):], v)
               for v in step_graph.graph.get_collection(
                   tf.GraphKeys.GLOBAL_VARIABLES)
               if v.op.name.startswith(prefix)]
    if not self.init_student:
      return teacher
    student = [(w.op.name, w) for w in step_graph.weights
               if w.op.name in names]
    return student + teacher
