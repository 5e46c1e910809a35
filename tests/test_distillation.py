"""Distillation (Section 4.2): the dense twin, its initialization from the
teacher, and the loss against a numpy computation."""
import gin
import helpers
import numpy as np
import pytest

from mtf_switch import distillation
from mtf_switch import layers
from mtf_switch import models
from mtf_switch.training import checkpoints
from mtf_switch.training import step as step_lib

VOCAB, LENGTH = 40, 8
INPUTS = np.array([[5, 9, 13, 2, 7, 30, 1, 0], [3, 3, 8, 21, 1, 0, 0, 0]],
                  np.int32)
# No padding: mesh-tensorflow divides the loss by batch x length.
TARGETS = np.array([[6, 11, 4, 9, 3, 8, 2, 1], [17, 2, 9, 25, 12, 7, 5, 1]],
                   np.int32)


def _teacher():
  """A tiny Switch bitransformer; 1.0x init, no z-loss, for a plain loss."""
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      ["models/switch_tiny.gin"],
      ["mtf_switch.ScaledInitBitransformer.init_scale = 1.0",
       "transformer.Unitransformer.z_loss = 0.0"])
  return models.make_bitransformer(VOCAB)


def _teacher_checkpoint(model_dir):
  teacher = _teacher()
  graph = step_lib.build_step_graph(teacher, 2, LENGTH, LENGTH, train=False)
  sess, _ = checkpoints.start_session(graph, None)
  with sess:
    checkpoints.save(sess, graph, model_dir)
  return teacher, checkpoints.resolve(model_dir)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_dense_twin_replaces_only_the_switch_layers():
  teacher = _teacher()
  student = distillation.dense_twin(teacher)
  for t_stack, s_stack in ((teacher.encoder, student.encoder),
                           (teacher.decoder, student.decoder)):
    pairs = list(zip(t_stack.layer_stack.layers, s_stack.layer_stack.layers))
    assert len(pairs) == len(t_stack.layer_stack.layers)
    swapped = [(t, s) for t, s in pairs
               if isinstance(t, layers.SwitchFeedForward)]
    assert swapped  # the teacher itself is unchanged
    for t, s in swapped:
      assert type(s).__name__ == "DenseReluDense"
      assert s.hidden_size == t.hidden_size and s.activation == "relu"
    assert all(type(t) is type(s) for t, s in pairs  # pylint: disable=unidiomatic-typecheck
               if not isinstance(t, layers.SwitchFeedForward))


def test_each_replaced_layer_has_its_own_weights_under_the_switch_layers_name():
  gin.clear_config()
  gin.parse_config_files_and_bindings(["models/switch_tiny.gin"],
                                      ["num_layer_pairs = 2"])
  teacher = models.make_bitransformer(VOCAB)
  student = distillation.dense_twin(teacher)
  # Evaluation graphs: the variables without an optimizer to build.
  graph = step_lib.build_step_graph(student, 2, LENGTH, LENGTH, train=False)
  names = {w.op.name for w in graph.weights}
  switch_layers = {n.split("/SwitchFeedForward/")[0] for n in
                   (w.op.name for w in step_lib.build_step_graph(
                       teacher, 2, LENGTH, LENGTH, train=False).weights)
                   if "/SwitchFeedForward/" in n}
  assert len(switch_layers) == 4  # 2 blocks x (encoder, decoder)
  for scope in switch_layers:
    assert scope + "/DenseReluDense/wi/kernel" in names
  # One FFN weight per FFN layer: 2 blocks x 2 FFNs x 2 stacks.
  assert len([n for n in names if n.endswith("DenseReluDense/wi/kernel")]) == 8


def test_student_starts_from_the_teachers_non_expert_weights_and_the_loss_mixes_both(
    tmp_path):
  teacher, checkpoint = _teacher_checkpoint(str(tmp_path / "teacher"))
  model = distillation.Distillation(teacher, fraction_soft=0.25)
  graph = step_lib.build_step_graph(model, 2, LENGTH, LENGTH)
  assignment = model.init_assignment(graph, checkpoint)
  teacher_names = {n for n, v in assignment
                   if v.op.name.startswith("teacher/")}
  student_names = {n for n, v in assignment
                   if not v.op.name.startswith("teacher/")}
  assert student_names and "shared/embedding" in student_names
  assert not any("SwitchFeedForward" in n or "layer_003/DenseReluDense" in n
                 for n in student_names)
  assert any("SwitchFeedForward/router" in n for n in teacher_names)
  # Only the student trains.
  assert all(not w.op.name.startswith("teacher/") for w in graph.weights)

  sess, _ = checkpoints.start_session(graph, None)
  feed = {graph.inputs: INPUTS, graph.targets: TARGETS}
  with sess:
    checkpoints.restore_weights(sess, graph, checkpoint, assignment)
    loss = sess.run(graph.loss, feed)
    checkpoints.save(sess, graph, str(tmp_path / "student"))
    variables = {v.op.name: v for v in graph.graph.get_collection("variables")}
    embeddings = [variables["teacher/shared/embedding"],
                  variables["shared/embedding"]]
    teacher_before, student_before = sess.run(embeddings)
    np.testing.assert_array_equal(student_before, teacher_before)
    sess.run(graph.train_op, feed)
    teacher_after, student_after = sess.run(embeddings)
  np.testing.assert_array_equal(teacher_after, teacher_before)
  assert not np.allclose(student_after, student_before)

  # numpy: 0.75 x CE(labels) + 0.25 x CE(teacher probabilities), per token.
  student_logits = helpers.mtf_logits(model.student, str(tmp_path / "student"),
                                      INPUTS, TARGETS)
  teacher_logits = helpers.mtf_logits(teacher, str(tmp_path / "teacher"),
                                      INPUTS, TARGETS)
  log_p = _log_softmax(student_logits.astype(np.float64))
  hard = -np.take_along_axis(log_p, TARGETS[..., None], -1).mean()
  teacher_p = np.exp(_log_softmax(teacher_logits.astype(np.float64)))
  soft = -(teacher_p * log_p).sum(-1).mean()
  assert soft > hard * 0.5  # the two terms are not alike by construction
  np.testing.assert_allclose(loss, 0.75 * hard + 0.25 * soft, rtol=1e-5)


def test_bad_mixes_are_refused():
  with pytest.raises(ValueError, match="fraction_soft"):
    distillation.Distillation(_teacher(), fraction_soft=1.5)
  with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
    distillation.Distillation(_teacher(), temperature=0)


def test_student_from_scratch_restores_only_the_teacher(tmp_path):
  teacher, checkpoint = _teacher_checkpoint(str(tmp_path / "teacher"))
  model = distillation.Distillation(teacher, init_student=False)
  # Another seed than the teacher's: same-named weights initialize alike.
  graph = step_lib.build_step_graph(model, 2, LENGTH, LENGTH, seed=7)
  assignment = model.init_assignment(graph, checkpoint)
  assert assignment
  assert all(v.op.name.startswith("teacher/") for _, v in assignment)
  sess, _ = checkpoints.start_session(graph, None)
  with sess:
    checkpoints.restore_weights(sess, graph, checkpoint, assignment)
    variables = {v.op.name: v for v in graph.graph.get_collection("variables")}
    teacher_embedding, student_embedding = sess.run(
        [variables["teacher/shared/embedding"], variables["shared/embedding"]])
  assert not np.allclose(student_embedding, teacher_embedding)
