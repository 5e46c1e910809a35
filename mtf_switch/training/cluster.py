"""One mesh across TensorFlow server processes, on one machine or several.

A cluster is the `host:port` addresses of TensorFlow servers
(`tf.distribute.Server`, started by `mtf_switch.training.servers`), tasks
0, 1, ... in TensorFlow's Estimator convention: task 0 is the `chief` job's
task 0, task i > 0 the `worker` job's task i - 1.  Mesh-TensorFlow's
`PlacementMeshImpl` places each mesh position's slices on a device; here
the devices are the tasks' CPUs (or GPUs), in blocks: with n positions on t
tasks, task i holds positions i*n/t to (i+1)*n/t - 1, so that the positions
of the mesh's last axis (the all-to-all's partners in the shipped layouts)
share a process where they can.

A step graph's session runs on the chief's master.  Everything not on the
mesh is placed there by TensorFlow: the input placeholders (the client
reads the data and feeds it), the master weights, the global step and the
saver.  So the chief holds every slice's master copy, and checkpoints are
written by the chief into the model dir on its file system (a shared or
cloud file system when the tasks run on several hosts).

The cluster of a process is TensorFlow's own description, the TF_CONFIG
environment variable (`{"cluster": {"chief": [...], "worker": [...]},
"task": {"type": "chief", "index": 0}}`: the client speaks for the chief,
as T5's Estimator needs); a command's --cluster flag sets it (`use`), so a
study's child processes inherit it.
"""
import contextlib
import json
import os
import re
import socket

import gin
import tensorflow.compat.v1 as tf

CHIEF, WORKER = "chief", "worker"
DEVICE_KINDS = ("cpu", "gpu")

# How long a task may take to accept a connection before it is called
# unreachable (a session on a cluster with a dead task would wait forever).
CONNECT_TIMEOUT_SECONDS = 10.0

# The errors of a step or a session whose task stopped answering.
LOST_TASK_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
                    tf.errors.DeadlineExceededError)


class TaskLostError(RuntimeError):
  """A task of the cluster is unreachable or stopped during a step."""


class Cluster:
  """The tasks of a mesh's TensorFlow servers.

  Attributes:
    addresses: list of "host:port", task 0 first.
  """

  def __init__(self, addresses):
    """Checks the addresses.

    Raises:
      ValueError: naming an address that is not host:port, or one given
        twice.
    """
    for address in addresses:
      host, _, port = address.rpartition(":")
      if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("cluster task %r: give host:port, e.g. "
                         "localhost:2222" % address)
    if len(set(addresses)) < len(addresses):
      raise ValueError("cluster %s names a task twice: give each server's "
                       "address once" % ",".join(addresses))
    if not addresses:
      raise ValueError("an empty cluster: give host:port of each task")
    self.addresses = list(addresses)

  @classmethod
  def parse(cls, text):
    """A cluster from "host:port,host:port" (task 0 first)."""
    return cls([a.strip() for a in text.split(",") if a.strip()])

  @classmethod
  def from_environment(cls):
    """The cluster of TF_CONFIG (its chief, then its workers), or None
    without TF_CONFIG.

    Raises:
      ValueError: naming TF_CONFIG when it is not JSON with one chief.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
      return None
    try:
      jobs = json.loads(text)["cluster"]
      chief, = jobs[CHIEF]
      return cls([chief] + list(jobs.get(WORKER, [])))
    except (ValueError, KeyError, TypeError):
      raise ValueError(
          "TF_CONFIG=%r: give JSON with the tasks' addresses, e.g. "
          '{"cluster": {"chief": ["localhost:2222"], "worker": '
          '["localhost:2223"]}}' % text) from None

  @property
  def num_tasks(self):
    return len(self.addresses)

  @property
  def target(self):
    """The session target: task 0's master."""
    return "grpc://" + self.addresses[0]

  def spec(self):
    jobs = {CHIEF: self.addresses[:1]}
    if self.num_tasks > 1:
      jobs[WORKER] = self.addresses[1:]
    return tf.train.ClusterSpec(jobs)

  def mesh_devices(self, mesh_size, device="cpu"):
    """A device per mesh position, the positions in blocks over the tasks.

    Args:
      mesh_size: int, the mesh's positions.
      device: "cpu" (a task's positions share its CPU) or "gpu" (a task's
        positions on its GPUs 0, 1, ..., one each).

    Raises:
      ValueError: if the mesh's positions do not split evenly over the
        tasks (a task would hold none, or more than another), or naming
        another device kind.
    """
    if device not in DEVICE_KINDS:
      raise ValueError("cluster device %r: give one of %s" % (
          device, ", ".join(DEVICE_KINDS)))
    if mesh_size % self.num_tasks:
      raise ValueError(
          "a mesh of %d positions over %d cluster tasks: give a mesh whose "
          "size is a multiple of %d (e.g. --mesh_shape batch:%d)"
          % (mesh_size, self.num_tasks, self.num_tasks, self.num_tasks))
    per_task = mesh_size // self.num_tasks
    return [task_device(p // per_task,
                        device, p % per_task if device == "gpu" else 0)
            for p in range(mesh_size)]

  def check_reachable(self, tasks=None):
    """Raises TaskLostError naming the first task (of `tasks`, default all)
    that does not accept a connection."""
    for task in range(self.num_tasks) if tasks is None else sorted(tasks):
      host, _, port = self.addresses[task].rpartition(":")
      try:
        socket.create_connection((host, int(port)),
                                 CONNECT_TIMEOUT_SECONDS).close()
      except OSError as e:
        raise TaskLostError(
            "cluster task %d (%s) is unreachable (%s): start its server "
            "(python -m mtf_switch.training.servers --cluster %s --task %d)"
            % (task, self.addresses[task], e, ",".join(self.addresses),
               task)) from None


def job_and_index(task):
  """(TensorFlow job, task index in it) of cluster task `task`."""
  return (CHIEF, 0) if task == 0 else (WORKER, task - 1)


def task_device(task, device="cpu", index=0):
  """The name of a task's device, e.g. /job:worker/task:0/device:GPU:1 (of
  cluster task 1)."""
  return "/job:%s/task:%d/device:%s:%d" % (
      job_and_index(task) + (device.upper(), index))


def use(cluster):
  """Makes `cluster` this process's (and its children's) cluster: TF_CONFIG.
  """
  os.environ["TF_CONFIG"] = json.dumps({
      "cluster": cluster.spec().as_dict(),
      "task": {"type": CHIEF, "index": 0}})


def add_flags(parser):
  """Adds --cluster and --cluster_device to a command's argparse parser
  (`mesh_devices`)."""
  parser.add_argument(
      "--cluster", default="",
      help="host:port,... of TensorFlow servers (task 0 first; "
           "python -m mtf_switch.training.servers starts them) to place "
           "the mesh on, in blocks of positions; default: this process")
  parser.add_argument(
      "--cluster_device", default="cpu", choices=DEVICE_KINDS,
      help="with --cluster: each task's positions on its CPU, or on its "
           "GPUs 0, 1, ... (one each)")


def mesh_devices(text, mesh_shape, device="cpu"):
  """The mesh's devices on the cluster of a --cluster value, made this
  process's cluster (`use`); None for "".  (A session of a graph on them
  checks that its tasks answer: `session_target`.)

  Args:
    text: "host:port,host:port" or "".
    mesh_shape: mtf.Shape.
    device: "cpu" or "gpu", as Cluster.mesh_devices.

  Raises:
    ValueError: naming a bad address, a mesh that does not split over
      the tasks, or a device kind given without a cluster.
  """
  if not text:
    if device != "cpu":
      raise ValueError("--cluster_device %s places a cluster's mesh: give "
                       "--cluster too, or leave it out" % device)
    return None
  cluster = Cluster.parse(text)
  devices = cluster.mesh_devices(mesh_shape.size, device)
  use(cluster)
  return devices


@gin.configurable(module="mtf_switch")
def cluster_devices(count=gin.REQUIRED, device="cpu"):
  """`count` mesh positions on TF_CONFIG's cluster, for T5's
  `utils.run.mesh_devices` (gin/layouts/cluster_*.gin), its tasks checked
  now.

  Args:
    count: int, the mesh's size.
    device: "cpu" or "gpu", as Cluster.mesh_devices.

  Returns:
    list of device names.

  Raises:
    ValueError: if TF_CONFIG is not set, or as Cluster.mesh_devices.
    TaskLostError: naming a task that does not answer.
  """
  cluster = Cluster.from_environment()
  if cluster is None:
    raise ValueError(
        "mtf_switch.cluster_devices: TF_CONFIG is not set; give "
        "mtf_switch_mesh_transformer --cluster host:port,... (or set "
        "TF_CONFIG) to train on a cluster's tasks")
  devices = cluster.mesh_devices(count, device)
  cluster.check_reachable()
  return devices


def session_config():
  """The config of a session on a cluster: the weights and other state a
  session makes live in that session alone (the servers outlive it; a
  rerun's graph must not meet the last run's variables)."""
  return tf.ConfigProto(isolate_session_state=True)


_TASK = re.compile(r"/job:(%s|%s)/(?:replica:\d+/)?task:(\d+)"
                   % (CHIEF, WORKER))


def _task(match):
  """The cluster task of a _TASK match."""
  job, index = match.groups()
  return 0 if job == CHIEF else int(index) + 1


def _tasks_named(text):
  return {_task(m) for m in _TASK.finditer(text)}


def graph_tasks(graph):
  """The cluster tasks `graph` places operations on."""
  return {t for op in graph.get_operations() for t in _tasks_named(op.device)}


def session_target(graph):
  """The target of a session of `graph`: "" when the graph runs in this
  process, else the chief's master, once the tasks the graph uses answer.

  Raises:
    ValueError: if the graph names cluster tasks and TF_CONFIG has none of
      them (no --cluster given).
    TaskLostError: naming a task that does not answer.
  """
  tasks = graph_tasks(graph)
  if not tasks:
    return ""
  cluster = Cluster.from_environment()
  if cluster is None or max(tasks) >= cluster.num_tasks:
    raise ValueError(
        "the graph places a mesh on cluster tasks %s, but TF_CONFIG %s: "
        "give --cluster host:port,... of those tasks' servers"
        % (sorted(tasks), "names %d" % cluster.num_tasks if cluster
           else "is not set"))
  cluster.check_reachable(tasks | {0})
  return cluster.target


@contextlib.contextmanager
def lost_tasks(model_dir=None):
  """Turns a lost task's error inside the block into TaskLostError, naming
  the task, its address and the last checkpoint (from which a rerun, once
  the task is back, resumes)."""
  try:
    yield
  except LOST_TASK_ERRORS as e:
    last = model_dir and tf.train.latest_checkpoint(model_dir)
    raise TaskLostError(
        "%s; nothing of the failed step was saved (last checkpoint: %s). "
        "Restart the task and run again to resume." % (
            describe(e), last or "none")) from None


def describe(error):
  """The tasks a lost-task error names, with their TF_CONFIG addresses, and
  the error's first line."""
  cluster = Cluster.from_environment()
  where = ", ".join(
      "task %d (%s)" % (t, cluster.addresses[t] if cluster and
                        t < cluster.num_tasks else "address unknown")
      for t in sorted(_tasks_named(str(error))))
  first = next((line.strip() for line in str(error.message).splitlines()
                if line.strip() and "Graph execution error" not in line
                and not line.startswith("From /job")), type(error).__name__)
  return "cluster %s stopped answering (%s)" % (where or "a task", first)


_RECV_LABEL = re.compile(r" from (\S+) to (\S+)")


def cross_task_bytes(run_metadata):
  """The bytes a traced step sent from one task to another.

  Read from the step's statistics (a run with
  `tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)`): every tensor a
  task received from another is a `RecvTensor` entry, labelled with its
  source and destination devices, whose output is the tensor received.
  Transfers between devices of one task are not counted.

  Args:
    run_metadata: tf.RunMetadata of the traced run.

  Returns:
    int, bytes.
  """
  sent = 0
  for device_stats in run_metadata.step_stats.dev_stats:
    for node in device_stats.node_stats:
      match = _RECV_LABEL.search(node.timeline_label)
      if node.node_name != "RecvTensor" or not match:
        continue
      source, destination = (_tasks_named(d) for d in match.groups())
      if source != destination:
        sent += sum(o.tensor_description.allocation_description
                    .requested_bytes for o in node.output)
  return sent
