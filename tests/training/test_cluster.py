"""A mesh across TensorFlow server processes: the cluster's checks, and
training on 2 and 4 local servers against one process."""
import io
import json
import os
import subprocess
import sys

import gin
import helpers  # graph mode, compat shim
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import cli
from mtf_switch import models
from mtf_switch.training import checkpoints
from mtf_switch.training import cluster
from mtf_switch.training import data
from mtf_switch.training import local_servers
from mtf_switch.training import loop
from mtf_switch.training import mesh as mesh_lib

TASK = "mtf_switch_default_span_corruption"
BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH = 4, 32, 8
STEPS, SAVE_EVERY = 8, 4


@pytest.fixture(autouse=True)
def _tf_config_left_as_found():
  """TF_CONFIG names this file's servers only while a test runs: a child
  process of a later test (T5's binary) would otherwise wait on them."""
  before = os.environ.get("TF_CONFIG")
  yield
  assert os.environ.get("TF_CONFIG") == before


@pytest.mark.parametrize("text,named", [
    ("localhost", "localhost"), ("localhost:http", "localhost:http"),
    ("a:1,a:1", "a:1,a:1"), ("h:0", "h:0"), ("", "empty")])
def test_a_bad_cluster_is_refused_by_name(text, named):
  with pytest.raises(ValueError, match=named):
    cluster.Cluster.parse(text)


def test_mesh_positions_go_to_the_tasks_in_blocks():
  two = cluster.Cluster.parse("h:1,h:2")
  chief, worker = "/job:chief/task:0", "/job:worker/task:0"
  assert two.mesh_devices(4) == [
      d + "/device:CPU:0" for d in (chief, chief, worker, worker)]
  assert two.mesh_devices(2) == [
      d + "/device:CPU:0" for d in (chief, worker)]
  with pytest.raises(ValueError, match="3 positions over 2 cluster tasks"):
    two.mesh_devices(3)
  assert two.mesh_devices(4, "gpu") == [
      chief + "/device:GPU:0", chief + "/device:GPU:1",
      worker + "/device:GPU:0", worker + "/device:GPU:1"]
  with pytest.raises(ValueError, match="'tpu'"):
    two.mesh_devices(2, "tpu")


def test_gpus_without_a_cluster_are_refused():
  with pytest.raises(ValueError, match="--cluster_device gpu .* --cluster"):
    cluster.mesh_devices("", mesh_lib.parse_mesh("batch:2")[0], "gpu")
  assert cluster.mesh_devices("", mesh_lib.parse_mesh("batch:2")[0]) is None


def test_the_cluster_comes_from_tf_config(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", "")  # none; restored after the test
  assert cluster.Cluster.from_environment() is None
  cluster.use(cluster.Cluster.parse("h:1,h:2"))
  assert cluster.Cluster.from_environment().addresses == ["h:1", "h:2"]
  # TensorFlow's Estimator convention (T5's binary reads it): the first
  # task is the chief, and the client speaks for it.
  assert json.loads(os.environ["TF_CONFIG"]) == {
      "cluster": {"chief": ["h:1"], "worker": ["h:2"]},
      "task": {"type": "chief", "index": 0}}
  monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h:1"]}}')
  with pytest.raises(ValueError, match="TF_CONFIG="):
    cluster.Cluster.from_environment()


def _graph_on_task(task):
  graph = tf.Graph()
  with graph.as_default(), tf.device(cluster.task_device(task)):
    tf.constant(1.0)
  return graph


def test_a_session_on_tasks_needs_the_cluster_and_its_tasks_up(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", "")  # none; restored after the test
  assert cluster.session_target(tf.Graph()) == ""
  with pytest.raises(ValueError, match=r"tasks \[1\].*not set"):
    cluster.session_target(_graph_on_task(1))
  port, = local_servers.free_ports(1)  # nothing listens there
  cluster.use(cluster.Cluster.parse("localhost:%d" % port))
  with pytest.raises(ValueError, match=r"tasks \[1\].*names 1"):
    cluster.session_target(_graph_on_task(1))
  with pytest.raises(cluster.TaskLostError,
                     match="task 0 \\(localhost:%d\\) is unreachable" % port):
    cluster.session_target(_graph_on_task(0))


def test_a_lost_task_is_named_with_its_address(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", "")  # restored after the test
  cluster.use(cluster.Cluster.parse("h:1,h:2"))
  error = tf.errors.UnavailableError(
      None, None, "Graph execution error:\n\nFrom /job:worker/replica:0/"
      "task:0:\nfailed to connect to all addresses")
  with pytest.raises(cluster.TaskLostError) as raised:
    with cluster.lost_tasks(None):
      raise error
  message = str(raised.value)
  assert "task 1 (h:2)" in message and "failed to connect" in message
  assert "last checkpoint: none" in message


# Training across processes.  Each run is the main job's own (TaskTraining)
# with a few steps of switch_tiny, in this process; the servers hold the
# mesh's slices.


def _job(model_dir, mesh_shape, layout, devices=None, job_class=None):
  gin.clear_config()
  cli.parse_files(["models/switch_tiny.gin"])
  model = models.make_model(data.vocab_size(TASK), mesh_shape, layout)
  lengths = data.step_lengths(TASK, INPUT_LENGTH, TARGET_LENGTH)
  return (job_class or loop.TaskTraining)(
      model, model_dir, TASK, BATCH_SIZE, *lengths, mesh_shape=mesh_shape,
      layout=layout, mesh_devices=devices)


def _train(job, steps=STEPS):
  return job.train(steps, log_every=steps, save_every=SAVE_EVERY,
                   out=io.StringIO())


def _weights(model_dir):
  reader = tf.train.load_checkpoint(model_dir)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()}


def _assert_same_run(got_history, got_dir, want_history, want_dir):
  np.testing.assert_allclose(got_history, want_history, rtol=1e-6)
  got, want = _weights(got_dir), _weights(want_dir)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7,
                               err_msg=name)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  """One-process runs of each layout, by (mesh_shape, layout)."""
  runs = {}

  def run(mesh_shape, layout):
    if (mesh_shape, layout) not in runs:
      model_dir = str(tmp_path_factory.mktemp("one_process"))
      history = _train(_job(model_dir, mesh_shape, layout))
      runs[mesh_shape, layout] = history, model_dir
    return runs[mesh_shape, layout]
  return run


@pytest.fixture(scope="module")
def two_servers():
  with local_servers.LocalServers(2, threads=1) as servers:
    yield servers


@pytest.fixture
def on_cluster(monkeypatch):
  """Makes a LocalServers' cluster this test's (TF_CONFIG restored after)."""
  monkeypatch.setenv("TF_CONFIG", "")

  def use(servers):
    cluster.use(servers.cluster)
    return servers.cluster
  return use


# Experts split over the processes: expert+data parallelism on one axis
# (T5's layout), and experts alone.
@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape,layout", [
    ("batch:2", "batch:batch;experts:batch"),
    ("experts:2", "experts:experts")])
def test_a_switch_lm_split_over_two_processes_trains_as_one_does(
    mesh_shape, layout, two_servers, on_cluster, one_process, tmp_path):
  devices = on_cluster(two_servers).mesh_devices(2)
  job = _job(str(tmp_path), mesh_shape, layout, devices)
  assert cluster.graph_tasks(job.step_graph.graph) == {0, 1}
  _assert_same_run(_train(job), str(tmp_path),
                   *one_process(mesh_shape, layout))


@pytest.mark.slow
def test_four_processes_train_as_one_does(on_cluster, one_process,
                                          tmp_path):
  mesh_shape, layout = "batch:2,experts:2", "batch:batch;experts:experts"
  with local_servers.LocalServers(4, threads=1) as servers:
    devices = on_cluster(servers).mesh_devices(4)
    job = _job(str(tmp_path), mesh_shape, layout, devices)
    assert cluster.graph_tasks(job.step_graph.graph) == {0, 1, 2, 3}
    history = _train(job)
  _assert_same_run(history, str(tmp_path), *one_process(mesh_shape, layout))


class _KillTask(loop.Action):
  """Kills a server after a step, as a crash of its host would."""

  reads_all_values = False

  def __init__(self, servers, task, after_step):
    super().__init__(1, after_step)
    self.servers, self.task, self.after_step = servers, task, after_step

  def due(self, step):
    return step == self.after_step

  def act(self, sess, step, values):
    self.servers.kill(self.task)


@pytest.mark.slow
def test_a_killed_task_stops_the_run_and_a_rerun_resumes(
    two_servers, on_cluster, one_process, tmp_path):
  mesh_shape, layout = "batch:2", "batch:batch;experts:batch"
  devices = on_cluster(two_servers).mesh_devices(2)
  model_dir = str(tmp_path)
  kill_after = SAVE_EVERY + 1

  class Crashing(loop.TaskTraining):

    def actions(self, *args):
      return super().actions(*args) + [_KillTask(two_servers, 1, kill_after)]

  with pytest.raises(cluster.TaskLostError) as raised:
    _train(_job(model_dir, mesh_shape, layout, devices, Crashing))
  address = two_servers.cluster.addresses[1]
  assert "task 1 (%s) stopped answering" % address in str(raised.value)
  # The failed step and the one before it left no checkpoint.
  assert checkpoints.latest(model_dir).endswith("model.ckpt-%d" % SAVE_EVERY)
  assert "model.ckpt-%d" % SAVE_EVERY in str(raised.value)

  # While the task is down, a run is refused before it starts.
  with pytest.raises(cluster.TaskLostError, match="task 1 .*unreachable"):
    _job(model_dir, mesh_shape, layout, devices)
  two_servers.start(1)
  job = _job(model_dir, mesh_shape, layout, devices)
  assert job.first_step == SAVE_EVERY
  history = _train(job)
  want_history, want_dir = one_process(mesh_shape, layout)
  _assert_same_run(history, model_dir, want_history[SAVE_EVERY:], want_dir)


@pytest.mark.slow
def test_the_main_job_names_a_task_that_is_down(tmp_path):
  port, = local_servers.free_ports(1)
  result = subprocess.run(
      [sys.executable, "-m", "mtf_switch.training.train",
       "--model_dir", str(tmp_path), "--steps", "2",
       "--mesh_shape", "batch:2", "--layout", "batch:batch;experts:batch",
       "--cluster", "localhost:%d,localhost:%d" % (port, port + 1)],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 1
  assert ("cluster task 0 (localhost:%d) is unreachable" % port
          in result.stderr.splitlines()[-1])
  assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.slow
def test_the_bytes_between_tasks_equal_a_hand_count(two_servers, on_cluster):
  on_cluster(two_servers)
  graph = tf.Graph()
  with graph.as_default():
    x = tf.placeholder(tf.float32, [1000, 100])  # fed to the chief
    with tf.device(cluster.task_device(1)):
      y = 2.0 * x  # x to task 1: 400,000 bytes
    with tf.device(cluster.task_device(0)):
      z = tf.reduce_sum(y, axis=1)  # y back to the chief: 400,000 bytes
    z_again = tf.reduce_sum(z)  # on the chief: nothing between tasks
  metadata = tf.RunMetadata()
  with tf.Session(cluster.session_target(graph), graph=graph,
                  config=mesh_lib.session_config(graph)) as sess:
    sess.run(z_again, {x: np.ones([1000, 100], np.float32)},
             options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
             run_metadata=metadata)
  assert cluster.cross_task_bytes(metadata) == 2 * 1000 * 100 * 4


@pytest.mark.slow
def test_the_servers_command_starts_local_servers_and_stops_them():
  process = subprocess.Popen(
      [sys.executable, "-m", "mtf_switch.training.servers", "--tasks", "2",
       "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
      text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  try:
    first = process.stdout.readline().split()
    assert first[0] == "cluster", first
    servers = cluster.Cluster.parse(first[1])
    assert servers.num_tasks == 2
    servers.check_reachable()
  finally:
    process.terminate()
    assert process.wait(timeout=60) == 0
  for task in range(2):
    with pytest.raises(cluster.TaskLostError):
      servers.check_reachable([task])


@pytest.mark.slow
def test_the_servers_command_refuses_tasks_and_a_task_together():
  result = subprocess.run(
      [sys.executable, "-m", "mtf_switch.training.servers", "--tasks", "2",
       "--cluster", "h:1", "--task", "0"], capture_output=True, text=True,
      timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 2
  assert "give --tasks N (local servers) or --cluster and --task" in (
      result.stderr)
