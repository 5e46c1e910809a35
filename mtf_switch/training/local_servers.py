"""Local TensorFlow servers for a mesh across processes: started on free
ports, each in a process of its own, checked to answer, and stopped (or
killed, as a crash would) by task; for trying a cluster on one machine,
its tests and its benchmark.  `mtf_switch.training.servers` is the command.
"""
import os
import socket
import subprocess
import sys
import time

import tensorflow.compat.v1 as tf

from mtf_switch.training import cluster as cluster_lib


def free_ports(count):
  """`count` distinct TCP ports free on localhost now."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket()
      s.bind(("localhost", 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def serve(cluster, task, threads=None):
  """Runs task `task`'s server of `cluster` in this process, until killed.

  Args:
    cluster: cluster.Cluster.
    task: int, the index of this server's address in the cluster.
    threads: None (TensorFlow's default, every core), or the threads of
      each of the server's op pools (inter- and intra-op).
  """
  config = (tf.ConfigProto(intra_op_parallelism_threads=threads,
                           inter_op_parallelism_threads=threads)
            if threads else None)
  job, index = cluster_lib.job_and_index(task)
  server = tf.distribute.Server(cluster.spec(), job_name=job,
                                task_index=index, config=config)
  print("task %d serving at %s" % (task, cluster.addresses[task]),
        flush=True)
  server.join()


class LocalServers:
  """N local servers, each its own process, on free ports: a context
  manager that starts them, waits until each answers, and stops them all.

  Attributes:
    cluster: cluster.Cluster of the servers' addresses.
    processes: the servers' subprocess.Popen, by task.
  """

  def __init__(self, tasks, threads=None, log_dir=None):
    self.cluster = cluster_lib.Cluster(
        ["localhost:%d" % p for p in free_ports(tasks)])
    self.threads = threads
    self.log_dir = log_dir
    self.processes = [None] * tasks

  def __enter__(self):
    try:
      for task in range(self.cluster.num_tasks):
        self.start(task)
    except BaseException:
      self.stop()
      raise
    return self

  def __exit__(self, *unused):
    self.stop()

  def start(self, task, timeout=60.0):
    """Starts (or restarts) task `task`'s server and waits until it answers.

    Raises:
      RuntimeError: naming the task, if its process exits or does not
        answer within `timeout` seconds.
    """
    command = [sys.executable, "-m", "mtf_switch.training.servers",
               "--cluster", ",".join(self.cluster.addresses),
               "--task", str(task)]
    if self.threads:
      command += ["--threads", str(self.threads)]
    log = (open(os.path.join(self.log_dir, "task%d.log" % task), "a")
           if self.log_dir else subprocess.DEVNULL)
    self.processes[task] = subprocess.Popen(command, stdout=log,
                                            stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while True:
      if self.processes[task].poll() is not None:
        raise RuntimeError("the server of task %d (%s) exited with status %d"
                           % (task, self.cluster.addresses[task],
                              self.processes[task].returncode))
      try:
        self.cluster.check_reachable([task])
        return
      except cluster_lib.TaskLostError:
        if time.time() > deadline:
          raise RuntimeError("the server of task %d (%s) did not answer "
                             "within %.0f s" % (
                                 task, self.cluster.addresses[task],
                                 timeout)) from None
        time.sleep(0.2)

  def kill(self, task):
    """Kills task `task`'s server at once (as a crash would)."""
    self.processes[task].kill()
    self.processes[task].wait()

  def stop(self):
    """Stops every server still running."""
    for process in self.processes:
      if process and process.poll() is None:
        process.terminate()
    for process in self.processes:
      if process:
        try:
          process.wait(timeout=10)
        except subprocess.TimeoutExpired:
          process.kill()
          process.wait()
