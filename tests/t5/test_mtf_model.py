"""T5's Python API on a CPU mesh: mtf_switch.t5.mtf_model.MtfModel."""
import os

import gin
import helpers
import pytest
import seqio
import tensorflow.compat.v1 as tf

import mtf_switch.tasks  # noqa: F401  (registers the task)
from mtf_switch.t5 import mtf_model
from mtf_switch.training import upcycling

TASK = "mtf_switch_copy_words"
LENGTHS = {"inputs": 32, "targets": 32}

pytestmark = pytest.mark.slow


def _model(model_dir):
  return mtf_model.MtfModel(
      model_dir, mesh_shape="batch:2", batch_size=8,
      sequence_length=LENGTHS, learning_rate_schedule=0.01,
      save_checkpoints_steps=10, iterations_per_loop=10)


def _vocabulary():
  return seqio.get_mixture_or_task(TASK).output_features["targets"].vocabulary


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  tf.disable_eager_execution()
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  model_dir = str(tmp_path_factory.mktemp("api") / "model")
  model = _model(model_dir)
  model.train(TASK, steps=20)
  return model, model_dir


def test_train_then_eval_writes_the_tasks_metric(trained):
  model, model_dir = trained
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-20")
  assert os.path.exists(os.path.join(model_dir, "operative_config.gin"))
  model.eval(TASK, checkpoint_steps=-1)
  eval_dir = os.path.join(model_dir, "validation_eval")
  assert os.path.exists(os.path.join(eval_dir, TASK + "_targets"))
  predictions = os.path.join(eval_dir, TASK + "_20_predictions")
  with open(os.path.join(eval_dir, TASK + "_targets")) as f:
    targets = f.read().splitlines()
  with open(predictions) as f:
    assert len(f.read().splitlines()) == len(targets) > 0
  scalars = helpers.summary_scalars(eval_dir)
  accuracy = scalars["eval/%s/sequence_accuracy" % TASK]
  assert 0.0 <= accuracy <= 100.0


def test_predict_writes_one_line_per_input(trained, tmp_path):
  model, _ = trained
  inputs = tmp_path / "inputs.txt"
  inputs.write_text("copy: one two three\ncopy: four five\ncopy: six\n")
  model.predict(str(inputs), str(tmp_path / "outputs.txt"),
                vocabulary=_vocabulary())
  with open(str(tmp_path / "outputs.txt-20")) as f:
    # Any reader's lines (mtf_switch.t5.compat.one_line_each), though a barely
    # trained model decodes control characters.
    lines = f.read().splitlines()
  assert len(lines) == 3
  # Text, not the repr of bytes (mtf_switch.t5.compat.decode_to_text).
  assert not [line for line in lines if line.startswith(("b'", 'b"'))]


def test_score_returns_a_log_likelihood_per_target(trained, tmp_path):
  model, _ = trained
  targets = ["one two", "three four five six seven"]
  scores, scored = model.score(
      inputs=["copy: one two", "copy: three four five six seven"],
      targets=targets, scores_file=str(tmp_path / "scores"),
      vocabulary=_vocabulary())
  assert scored == targets
  assert all(s < 0 for s in scores)
  # Five words cost more than two under a barely trained model.
  assert scores[1] < scores[0]
  with open(str(tmp_path / "scores.scores")) as f:
    assert [float(x) for x in f.read().split()] == pytest.approx(scores,
                                                                 rel=1e-4)


def test_finetune_starts_from_the_pretrained_step(trained, tmp_path):
  _, model_dir = trained
  finetuned_dir = str(tmp_path / "finetuned")
  _model(finetuned_dir).finetune(TASK, finetune_steps=10,
                                 pretrained_model_dir=model_dir)
  assert tf.train.latest_checkpoint(finetuned_dir).endswith("model.ckpt-30")
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  finetuned = tf.train.load_checkpoint(
      os.path.join(finetuned_dir, "model.ckpt-20"))
  name = next(n for n in reader.get_variable_to_shape_map()
              if "SwitchFeedForward" in n and "slot" not in n)
  assert (reader.get_tensor(name) == finetuned.get_tensor(name)).all()


def test_export_writes_a_saved_model_that_decodes(trained, tmp_path):
  model, _ = trained
  export_dir = model.export(str(tmp_path / "export"), vocabulary=_vocabulary())
  export_dir = export_dir.decode() if isinstance(export_dir, bytes) else export_dir
  with tf.Graph().as_default(), tf.Session() as sess:
    meta_graph = tf.saved_model.loader.load(sess, ["serve"], export_dir)
    signature = meta_graph.signature_def["serving_default"]
    feed = {signature.inputs["inputs"].name: ["copy: one two"] * 8}
    outputs = sess.run(signature.outputs["outputs"].name, feed)
  assert len(outputs) == 8 and isinstance(outputs[0], bytes)


def test_train_starts_from_an_upcycled_dense_checkpoint(tmp_path):
  """MtfModel.train(init_checkpoint=mtf_switch.upcycled_checkpoint(...)):
  each expert of switch_tiny starts as the dense_tiny FFN it replaces."""
  dense_dir = str(tmp_path / "dense")
  gin.clear_config()
  gin.parse_config_file("models/dense_tiny.gin")
  _model(dense_dir).train(TASK, steps=10)
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  path = upcycling.upcycled_checkpoint(dense_dir,
                                       out_dir=str(tmp_path / "upcycled"))
  switch_dir = str(tmp_path / "switch")
  _model(switch_dir).train(TASK, steps=10, init_checkpoint=path)
  dense = tf.train.load_checkpoint(tf.train.latest_checkpoint(dense_dir))
  start = tf.train.load_checkpoint(os.path.join(switch_dir, "model.ckpt-0"))
  experts = start.get_tensor(
      "decoder/block_000/layer_005/SwitchFeedForward/wi/kernel")
  for expert in experts:
    assert (expert == dense.get_tensor(
        "decoder/block_001/layer_002/DenseReluDense/wi/kernel")).all()
  assert tf.train.latest_checkpoint(switch_dir).endswith("model.ckpt-10")
