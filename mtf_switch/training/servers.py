r"""TensorFlow servers for a mesh across processes (`mtf_switch.training.cluster`).

On one machine, N local servers on free ports, stopped together (Ctrl-C):

  python -m mtf_switch.training.servers --tasks 2
  # prints: cluster localhost:PORT0,localhost:PORT1; then, elsewhere:
  python -m mtf_switch.training.train --mesh_shape batch:2 \
      --layout "batch:batch;experts:batch" --cluster localhost:PORT0,...

On several hosts, one server per host, each given the whole cluster and
its own task:

  python -m mtf_switch.training.servers --cluster host0:2222,host1:2222 \
      --task 1
"""
import signal
import sys
import time

from mtf_switch import cli
from mtf_switch.training import cluster as cluster_lib
from mtf_switch.training import local_servers


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tasks", type=cli.positive_int, default=None,
                      help="start this many local servers on free ports "
                           "and keep them until Ctrl-C")
  parser.add_argument("--cluster", default="",
                      help="with --task: the whole cluster, host:port,... "
                           "(task 0 first)")
  parser.add_argument("--task", type=cli.non_negative_int, default=None,
                      help="with --cluster: run this task's server here")
  parser.add_argument("--threads", type=cli.positive_int, default=None,
                      help="threads of each server's op pools (default: "
                           "TensorFlow's, every core)")
  args = parser.parse_args(argv)
  if (args.tasks is None) == (args.task is None):
    parser.error("give --tasks N (local servers) or --cluster and --task "
                 "(one server of a cluster)")
  if args.task is not None:
    with cli.refusals(parser, "--cluster %s" % args.cluster):
      cluster = cluster_lib.Cluster.parse(args.cluster)
    if args.task >= cluster.num_tasks:
      parser.error("--task %d: the cluster has tasks 0 to %d" % (
          args.task, cluster.num_tasks - 1))
    local_servers.serve(cluster, args.task, args.threads)
    return
  # SIGTERM ends the servers too, as Ctrl-C does.
  signal.signal(signal.SIGTERM, lambda *unused: sys.exit(0))
  with local_servers.LocalServers(args.tasks, args.threads) as servers:
    print("cluster %s" % ",".join(servers.cluster.addresses), flush=True)
    print("(Ctrl-C stops the servers)", flush=True)
    try:
      while all(p.poll() is None for p in servers.processes):
        time.sleep(1.0)
      sys.exit("a server exited; stopping the others")
    except KeyboardInterrupt:
      pass


if __name__ == "__main__":
  main()
