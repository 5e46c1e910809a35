r"""Training-step time of mtf_switch against HuggingFace's PyTorch twins.

The peer a CPU user would pick for a Switch Transformer is HuggingFace's
`SwitchTransformersForConditionalGeneration` (and `T5ForConditionalGeneration`
for the dense model).  This trains both frameworks' models at the same
shapes, batch and optimizer side by side in one run, on the same token
batches, and times the steps in turns:

  shape set a (the issue's): d_model 128, d_ff 512, 4 heads of 32, 4 + 4
    layers, Switch-8 in every other FFN;
  shape set b (the main job's): models/switch_tiny.gin and
    models/dense_tiny.gin;
  shape set c (fixed costs): set b with d_model 8, d_ff 8, 2 heads of 4,
    so that a step's time is mostly what each op costs whatever its size;

both at batch 16, inputs 64, targets 16 tokens, vocabulary 2,176 (the
default task's 2,100 padded to a multiple of 128, as mesh-tensorflow pads
it), dropout 0, Adafactor at a fixed learning rate of 1e-2.

mtf_switch is measured several ways, to separate the per-step overheads:
the main job's step as it runs (the next seqio batch, loss and metrics
fetched) on its default mesh (one device) and on its former default
(`batch:1,experts:2`, which computed all but the experts on both
positions), the step fed a pre-made batch, the train op alone, an empty
session.run, and the seqio batch alone; and with cheap settings (TensorFlow
threading, XLA auto-clustering, oneDNN off, the index and dropless
dispatch, the `batch:2` mesh, the input pipeline without prefetch, a
session alone in its process) as extra rows.

Every measured thing lives in a worker process (HuggingFace in one, the
TensorFlow sessions with default settings in another, each threading or XLA
setting in its own, since TensorFlow takes its thread pools and XLA flags
from the first session and the environment of a process).  The workers
build their models, then wait; each round asks every item, in a new order
per round, for --steps steps, so that drift hits all alike.  Medians over
rounds, spread min-max.

  python benchmarks/peer_hf.py --out benchmarks/results

writes peer_hf.json (the run's times, saved after every round), and from it
peer_hf.csv, peer_hf.md and peer_hf.png (--report_only writes these three
again from the JSON; --name gives the four another name, for a run of a
few rows beside a full one).
"""
import argparse
import collections
import csv
import functools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time

BATCH, INPUTS, TARGETS = 16, 64, 16
TOKENS_PER_STEP = BATCH * (INPUTS + TARGETS)  # as the main job counts them
TASK = "mtf_switch_default_span_corruption"
LEARNING_RATE = 1e-2
# The main job's default mesh and layout (mtf_switch/training/train.py): one
# device.  Its former default split the experts over two positions and
# computed everything else on both.
MAIN_JOB_MESH = ("", "")
FORMER_MAIN_JOB_MESH = ("batch:1,experts:2", "batch:batch;experts:experts")
MAIN_JOB_LOG_EVERY = 25  # the main job's --log_every
# Pre-made batches: drawn once from np.random.RandomState(BATCH_SEED), the
# same arrays in every worker, fed in the same order.
BATCH_SEED, NUM_BATCHES = 0, 8

_ISSUE_SHAPES = ["d_model = 128", "d_ff = 512", "num_heads = 4", "d_kv = 32"]
# Set b's layers, ops and batch with every width shrunk to a few numbers:
# what is left of a step is its fixed cost per op (and the vocabulary's
# projection and softmax, alike in both frameworks).
_FIXED_COST_SHAPES = ["d_model = 8", "d_ff = 8", "num_heads = 2", "d_kv = 4"]
# (gin file, bindings) of each model of each shape set.
SHAPE_SETS = {
    "a": {"switch": ("models/switch_tiny.gin",
                     _ISSUE_SHAPES + ["num_layer_pairs = 2",
                                      "num_experts = 8"]),
          "dense": ("models/dense_tiny.gin",
                    _ISSUE_SHAPES + ["num_layers = 4"])},
    "b": {"switch": ("models/switch_tiny.gin", []),
          "dense": ("models/dense_tiny.gin", [])},
    "c": {"switch": ("models/switch_tiny.gin", _FIXED_COST_SHAPES),
          "dense": ("models/dense_tiny.gin", _FIXED_COST_SHAPES)},
}

# What each row measures; the mtf_switch rows name their mesh apart.
VARIANTS = collections.OrderedDict([
    ("hf", "HuggingFace, PyTorch eager: forward with labels (router losses "
           "on for Switch), backward, Adafactor step, zero_grad, "
           "loss.item(); pre-made batch"),
    ("hf_threads1", "as hf, torch.set_num_threads(1), own process"),
    ("hf_passive", "as hf (2 threads), OMP_WAIT_POLICY=PASSIVE (PyTorch's "
                   "OpenMP threads sleep instead of spinning while they "
                   "wait), own process"),
    ("main_job", "the main job's step as it runs (loop.train): next seqio "
                 "batch, fetches loss + the guard's scalars + train op, and "
                 "the routing metrics and all scalars every 25th step (its "
                 "--log_every); on its default mesh (1 device) and its "
                 "former one (batch:1,experts:2)"),
    ("main_job_noprefetch", "as main_job on one device, the seqio batch "
                            "made when asked for (data.task_batches' "
                            "prefetch_batches=0) instead of two made ahead "
                            "on tf.data's threads"),
    ("fed", "the same step fed a pre-made batch instead of the seqio one "
            "(fetching, as loop.train does on a step that logs nothing, the "
            "loss, the guard's scalars and the train op)"),
    ("fed_all", "as fed, fetching also the routing metrics and every "
                "scalar (what a logging step fetches)"),
    ("train_op", "pre-made batch, fetching the train op only (the step op "
                 "alone)"),
    ("empty_run", "session.run of a tf.no_op in the step's session: the "
                  "per-call overhead"),
    ("seqio_next", "next() of the main job's seqio batch iterator alone "
                   "(no step)"),
    ("intra1", "train op only, ConfigProto(intra_op_parallelism_threads=1, "
               "inter_op_parallelism_threads=1), own process"),
    ("inter1", "train op only, ConfigProto(intra_op_parallelism_threads=2, "
               "inter_op_parallelism_threads=1), own process"),
    ("inter2", "train op only, ConfigProto(intra_op_parallelism_threads=2, "
               "inter_op_parallelism_threads=2), own process"),
    ("inter2_here", "as inter2, in the default rows' process (a session "
                    "of its own beside theirs)"),
    ("alone", "train op only, default session config, in a process of its "
              "own (one session, as the main job runs)"),
    ("main_job_alone", "as main_job on one device, in a process of its own "
                       "(one session and its data pipeline, as the main job "
                       "runs)"),
    ("onednn_off", "as alone, with TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's "
                   "own CPU kernels instead of oneDNN's, on by default on "
                   "x86 Linux)"),
    ("xla_on1", "train op only, global_jit_level ON_1 with TF_XLA_FLAGS="
                "--tf_xla_cpu_global_jit, own process"),
    ("xla_auto2", "train op only, TF_XLA_FLAGS='--tf_xla_auto_jit=2 "
                  "--tf_xla_cpu_global_jit', own process"),
    ("index", "train op only, mtf_switch.SwitchFeedForward.dispatch_mode = "
              "'index' (Switch only)"),
    ("dropless", "train op only, mtf_switch.SwitchFeedForward.dispatch_mode "
                 "= 'dropless': each expert computes the tokens routed to it, "
                 "as HuggingFace's (Switch only)"),
    ("expert_data2", "as fed, on mesh batch:2 with layout batch:batch;"
                     "experts:batch (gin/layouts/cpu_expert_data_2.gin): "
                     "the batch and the experts split over the two "
                     "positions, nothing replicated"),
])
# Cheap settings: HuggingFace's threads and OpenMP wait policy; on the
# one-device step op, a worker process's environment, its sessions'
# config, extra gin bindings; another mesh for the main job's step.
EXPERIMENTS = {
    "hf_threads1": dict(framework="hf", threads=1),
    "hf_passive": dict(framework="hf", env={"OMP_WAIT_POLICY": "PASSIVE"}),
    "intra1": dict(config={"intra": 1, "inter": 1}),
    "inter1": dict(config={"intra": 2, "inter": 1}),
    "inter2": dict(config={"intra": 2, "inter": 2}),
    # TensorFlow sizes its thread pools at a process's first session, so
    # this asks whether inter2's gain is its setting or its own process.
    "inter2_here": dict(config={"intra": 2, "inter": 2}, own_process=False),
    "main_job_noprefetch": dict(what="main_job", prefetch_batches=0),
    # The default rows share their process with a dozen sessions; the main
    # job runs one.
    "alone": dict(own_process=True),
    "main_job_alone": dict(what="main_job", own_process=True),
    "onednn_off": dict(env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "xla_on1": dict(config={"jit": "ON_1"},
                    env={"TF_XLA_FLAGS": "--tf_xla_cpu_global_jit"}),
    "xla_auto2": dict(env={"TF_XLA_FLAGS": "--tf_xla_auto_jit=2 "
                                           "--tf_xla_cpu_global_jit"}),
    "index": dict(bindings=[
        "mtf_switch.SwitchFeedForward.dispatch_mode = 'index'"],
                  switch_only=True),
    "dropless": dict(bindings=[
        "mtf_switch.SwitchFeedForward.dispatch_mode = 'dropless'"],
                     switch_only=True),
    # gin/layouts/cpu_expert_data_2.gin's mesh: the experts split along the
    # batch's axis, so that nothing is computed twice.
    "expert_data2": dict(what="fed", mesh=("batch:2",
                                           "batch:batch;experts:batch")),
}
ONE_DEVICE = "1 device"


def make_batches(vocab_size, seed=BATCH_SEED, count=NUM_BATCHES):
  """The pre-made batches both frameworks train on.

  Returns:
    list of {"inputs": int32 [BATCH, INPUTS], "targets": int32 [BATCH,
    TARGETS]}: token ids in [1, vocab_size), no padding, all from one
    np.random.RandomState(seed).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)
  return [{"inputs": rng.randint(1, vocab_size, (BATCH, INPUTS)).astype(
      np.int32),
           "targets": rng.randint(1, vocab_size, (BATCH, TARGETS)).astype(
               np.int32)} for _ in range(count)]


def parse_gin(shapes, model, bindings=()):
  """Parses the gin of one model of a shape set (plus extra bindings)."""
  import gin  # pylint: disable=g-import-not-at-top
  import mtf_switch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  gin_file, shape_bindings = SHAPE_SETS[shapes][model]
  gin.clear_config()
  gin.parse_config_files_and_bindings([gin_file],
                                      list(shape_bindings) + list(bindings))


def switch_layers(mtf_model):
  """The SwitchFeedForward layers of a Bitransformer, encoder first."""
  from mtf_switch import layers  # pylint: disable=g-import-not-at-top
  return [layer for stack in (mtf_model.encoder, mtf_model.decoder)
          for layer in stack.layer_stack.layers
          if isinstance(layer, layers.SwitchFeedForward)]


def hf_twin_config(mtf_model, input_length=INPUTS, dropout_rate=0.0):
  """HuggingFace's config of the twin of a gin-built mtf_switch model.

  The shapes come from `mtf_switch.hf.convert.describe` (the export's
  reading of the model).  HuggingFace's router keeps, per sequence, the
  first `expert_capacity` tokens that choose each expert; mtf_switch keeps
  the first `capacity` of each group of `group_size` tokens.  The twin's
  `expert_capacity` is mtf_switch's training capacity of one input
  sequence (capacity factor 1.25 of its tokens): the same as mtf_switch's
  per group when a group is one input sequence (group 64 = inputs 64, as
  here).  A decoder group of mtf_switch holds group_size / target_length
  sequences under that capacity, where HuggingFace gives each target
  sequence all of it, so HuggingFace drops fewer decoder tokens.  Neither
  changes HuggingFace's FLOPs (it runs each expert on the tokens routed to
  it, whatever the capacity), while mtf_switch's einsum dispatch computes
  experts x capacity slots per group, full or not.

  Args:
    mtf_model: a transformer.Bitransformer, e.g. models.make_model(2100)
      with models/switch_tiny.gin parsed.
    input_length: tokens per input sequence.
    dropout_rate: of the twin (0 here, as the gin files' dropout_rate).

  Returns:
    ("switch", SwitchTransformersConfig kwargs) or ("t5", T5Config kwargs)
    for a model without Switch layers.
  """
  from mtf_switch.hf import convert  # pylint: disable=g-import-not-at-top
  description = convert.describe(mtf_model, dropout_rate)
  if description.router is None:
    return "t5", dict(
        vocab_size=description.vocab_size, d_model=description.d_model,
        d_kv=description.d_kv, d_ff=description.d_ff,
        num_heads=description.num_heads,
        num_layers=len(description.encoder),
        num_decoder_layers=len(description.decoder),
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128, dropout_rate=dropout_rate,
        layer_norm_epsilon=1e-6, feed_forward_proj=description.activation,
        tie_word_embeddings=description.tie_word_embeddings,
        is_encoder_decoder=True, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0)
  config = convert.hf_config(description, sequence_length=input_length)
  (capacity,) = {layer.capacity(input_length, train=True)
                 for layer in switch_layers(mtf_model)}
  config["expert_capacity"] = capacity
  return "switch", config


def capacity_note(mtf_model, batch=BATCH, inputs=INPUTS, targets=TARGETS):
  """How mtf_switch groups and caps the tokens of one step (for the
  Markdown), or "" for a dense model."""
  from mtf_switch import layers  # pylint: disable=g-import-not-at-top
  switch = switch_layers(mtf_model)
  if not switch:
    return ""
  layer = switch[0]
  parts = []
  for stack, length in (("encoder", inputs), ("decoder", targets)):
    group = layers.choose_group_size(batch * length, layer.group_size, 1)
    sequences = group / length
    parts.append("%s groups of %d tokens (%g sequence%s), capacity %d" % (
        stack, group, sequences, "" if sequences == 1 else "s",
        layer.capacity(group, train=True)))
  return "; ".join(parts)


# ---------------------------------------------------------------------------
# Workers: build the measured things, then run steps on request.


class _Item:
  """One measured thing in a worker: `run(steps)` returns seconds."""

  def __init__(self, run, info):
    self.run = run
    self.info = info


def mtf_twin(shapes, model, vocab_size, bindings=(), mesh_shape="",
             layout=""):
  """mtf_switch's step graph of one model of a shape set (plus extra gin
  bindings), with Adafactor at LEARNING_RATE as the HF twin has it."""
  import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top
  from mtf_switch import models  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import step as step_lib  # pylint: disable=g-import-not-at-top
  parse_gin(shapes, model, bindings)
  return step_lib.build_step_graph(
      models.make_model(vocab_size, mesh_shape, layout), BATCH, INPUTS,
      TARGETS, mesh_shape, layout,
      make_optimizer=functools.partial(mtf.optimize.AdafactorOptimizer,
                                       learning_rate=LEARNING_RATE))


def hf_twin(config_class, config):
  """HuggingFace's twin in training mode and its Adafactor, from
  `hf_twin_config`'s (config_class, config); weights from seed 0."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers.optimization import Adafactor  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  cls, config_cls = {
      "switch": (transformers.SwitchTransformersForConditionalGeneration,
                 transformers.SwitchTransformersConfig),
      "t5": (transformers.T5ForConditionalGeneration,
             transformers.T5Config)}[config_class]
  model = cls(config_cls(**config))
  model.train()
  # mesh-tensorflow's AdafactorOptimizer as the main job makes it: fixed
  # learning rate scaled by each weight's RMS, second-moment decay
  # 1 - step^-0.8, update clipping 1.0, no first moment.
  optimizer = Adafactor(model.parameters(), lr=LEARNING_RATE,
                        relative_step=False, scale_parameter=True,
                        warmup_init=False, decay_rate=-0.8,
                        clip_threshold=1.0, beta1=None)
  return model, optimizer


def _hf_items(specs):
  """HuggingFace models: each spec is {"config_class", "config"}."""
  import torch  # pylint: disable=g-import-not-at-top
  (threads,) = {spec.get("threads", 2) for spec in specs}
  torch.set_num_threads(threads)
  items = []
  for spec in specs:
    model, optimizer = hf_twin(spec["config_class"], spec["config"])
    router_losses = spec["config_class"] == "switch"
    batches = [{k: torch.from_numpy(v).long() for k, v in b.items()}
               for b in make_batches(spec["vocab_size"])]
    cursor = [0]

    def step(model=model, optimizer=optimizer, batches=batches,
             cursor=cursor, router_losses=router_losses):
      batch = batches[cursor[0] % len(batches)]
      cursor[0] += 1
      out = model(input_ids=batch["inputs"], labels=batch["targets"],
                  output_router_logits=router_losses)
      out.loss.backward()
      optimizer.step()
      optimizer.zero_grad(set_to_none=True)
      return out.loss.item()

    def run(steps, step=step):
      start = time.perf_counter()
      for _ in range(steps):
        step()
      return time.perf_counter() - start

    for _ in range(2):  # first steps allocate
      step()
    with torch.profiler.profile() as profile:
      step()
    ops = sum(1 for e in profile.events() if e.cpu_parent is None)
    params = list(model.named_parameters())
    items.append(_Item(run, {
        "params": sum(p.numel() for _, p in params),
        "expert_params": sum(p.numel() for n, p in params
                             if ".experts." in n),
        "ops_per_step": ops}))
  return items


def _session_config(config):
  """tf.ConfigProto of an item's {"intra", "inter", "jit"}, or None."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  if not config:
    return None
  proto = tf.ConfigProto(
      intra_op_parallelism_threads=config.get("intra", 0),
      inter_op_parallelism_threads=config.get("inter", 0))
  if config.get("jit"):
    proto.graph_options.optimizer_options.global_jit_level = getattr(
        tf.OptimizerOptions, config["jit"])
  return proto


def _tf_items(specs):
  """mtf_switch step graphs and the seqio pipeline.

  Each spec: {"what": "main_job" | "fed" | "fed_all" | "train_op" |
  "empty_run" | "seqio_next", "shapes", "model", "mesh_shape", "layout",
  "bindings", "config"}.  Specs of one graph share it, and of one session
  config its session.
  """
  from mtf_switch.t5 import compat  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import data  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import loop  # pylint: disable=g-import-not-at-top

  tf.disable_eager_execution()
  vocab_size = data.vocab_size(TASK)

  class _LogEvery(loop.Action):
    """Reads every value the main job's console report reads, when due."""

    def act(self, sess, step, values):
      del sess, step, values

  batches = make_batches(vocab_size)
  graphs, sessions, items = {}, {}, []
  for spec in specs:
    if spec["what"] == "seqio_next":
      iterator = data.task_batches(TASK, "train", BATCH, INPUTS, TARGETS)

      def run_next(steps, iterator=iterator):
        start = time.perf_counter()
        for _ in range(steps):
          next(iterator)
        return time.perf_counter() - start
      next(iterator)
      items.append(_Item(run_next, {}))
      continue
    graph_key = (spec["shapes"], spec["model"], spec["mesh_shape"],
                 spec["layout"], tuple(spec["bindings"]))
    if graph_key not in graphs:
      graph = mtf_twin(spec["shapes"], spec["model"], vocab_size,
                       spec["bindings"], spec["mesh_shape"], spec["layout"])
      with graph.graph.as_default():
        noop = tf.no_op()
      graphs[graph_key] = (graph, noop)
    graph, noop = graphs[graph_key]
    session_key = graph_key + (json.dumps(spec["config"], sort_keys=True),)
    if session_key not in sessions:
      sess = tf.Session(graph=graph.graph,
                        config=_session_config(spec["config"]))
      for op in graph.init_ops:
        sess.run(op)
      sessions[session_key] = sess
    sess = sessions[session_key]
    what = spec["what"]
    if what == "main_job":
      iterator = data.task_batches(
          TASK, "train", BATCH, INPUTS, TARGETS,
          prefetch_batches=spec.get("prefetch_batches", 2))

      def run(steps, sess=sess, graph=graph, iterator=iterator):
        done = int(sess.run(graph.global_step))
        start = time.perf_counter()
        loop.train(sess, graph, iterator, done + steps,
                   [_LogEvery(MAIN_JOB_LOG_EVERY, None)])
        return time.perf_counter() - start
    elif what == "empty_run":

      def run(steps, sess=sess, noop=noop):
        start = time.perf_counter()
        for _ in range(steps):
          sess.run(noop)
        return time.perf_counter() - start
    else:
      # loop.train's fetches (on a step that logs nothing, or on one that
      # logs), or the train op alone.
      fetches = (loop.step_fetches(graph, what == "fed_all")
                 if what in ("fed", "fed_all") else graph.train_op)
      cursor = [0]

      def run(steps, sess=sess, graph=graph, fetches=fetches, cursor=cursor):
        start = time.perf_counter()
        for _ in range(steps):
          batch = batches[cursor[0] % len(batches)]
          cursor[0] += 1
          sess.run(fetches, {graph.inputs: batch["inputs"],
                             graph.targets: batch["targets"]})
        return time.perf_counter() - start
    run(2)  # first steps allocate (and compile, with XLA)
    items.append(_Item(run, {
        "params": sum(int(np.prod(w.shape.as_list())) for w in graph.weights),
        "expert_params": sum(int(np.prod(w.shape.as_list()))
                             for w in graph.weights
                             if "SwitchFeedForward/w" in w.op.name),
        **_traced_nodes(sess, graph, what, noop, batches[0])}))
  return items


def _traced_nodes(sess, graph, what, noop, batch):
  """{"ops_per_step": TensorFlow nodes one run of the item executes (a
  traced run), "optimizer_ops": those of them that update the weights
  (mesh-tensorflow's Adafactor names them `.../adafactor/...`)}."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  fetches = {"empty_run": noop, "train_op": graph.train_op}.get(
      what, {"loss": graph.loss, "metrics": graph.metrics,
             "scalars": graph.scalars, "train_op": graph.train_op})
  metadata = tf.RunMetadata()
  sess.run(fetches, {graph.inputs: batch["inputs"],
                     graph.targets: batch["targets"]},
           options=tf.RunOptions(trace_level=tf.RunOptions.SOFTWARE_TRACE),
           run_metadata=metadata)
  names = [n.node_name for d in metadata.step_stats.dev_stats
           for n in d.node_stats]
  return {"ops_per_step": len(names),
          "optimizer_ops": sum("adafactor" in n for n in names)}


def worker_main(kind, specs_path):
  """A worker: builds its items, says ready, then runs steps on request.

  Protocol lines on the original stdout start with "@@" (libraries'
  prints go to stderr); requests come as JSON lines on stdin.
  """
  protocol = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  with open(specs_path) as f:
    specs = json.load(f)
  items = (_hf_items if kind == "hf" else _tf_items)(specs)

  def send(message):
    protocol.write("@@" + json.dumps(message) + "\n")
    protocol.flush()
  send({"ready": [item.info for item in items]})
  for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "quit":
      break
    send({"seconds": items[request["item"]].run(request["steps"])})


class Worker:
  """The orchestrator's handle on a worker process."""

  def __init__(self, name, kind, specs, env, log_dir):
    self.name = name
    self.specs_path = os.path.join(log_dir, name + ".json")
    with open(self.specs_path, "w") as f:
      json.dump(specs, f)
    self.log_path = os.path.join(log_dir, name + ".log")
    self.log = open(self.log_path, "w")
    self.process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", kind,
         self.specs_path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        text=True, env=dict(os.environ, **env))

  def receive(self):
    while True:
      line = self.process.stdout.readline()
      if not line:
        self.log.flush()
        with open(self.log_path) as f:
          tail = f.read()[-3000:]
        raise RuntimeError("worker %s died:\n%s" % (self.name, tail))
      if line.startswith("@@"):
        return json.loads(line[2:])

  def request(self, **message):
    self.process.stdin.write(json.dumps(message) + "\n")
    self.process.stdin.flush()
    return self.receive()

  def close(self):
    try:
      self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
      self.process.stdin.close()
    except BrokenPipeError:
      pass
    self.process.wait()
    self.log.close()


# ---------------------------------------------------------------------------
# The orchestrator: what to measure, in turns, and the results.


def plan(shape_sets, model_kinds, experiments, hf_configs):
  """The measured items: a list of dicts with the row's labels (framework,
  model, shapes, variant, mesh), its worker's name and kind, the worker's
  environment and the spec the worker builds it from."""
  items = []

  def add(framework, model, shapes, variant, mesh, worker, kind, spec,
          env=None):
    items.append(dict(framework=framework, model=model, shapes=shapes,
                      variant=variant, mesh=mesh, worker=worker, kind=kind,
                      env=env or {}, spec=spec))

  for shapes in shape_sets:
    for model in model_kinds:
      config_class, hf_config = hf_configs[(shapes, model)]
      hf = dict(config_class=config_class, config=hf_config,
                vocab_size=hf_configs["vocab_size"])
      add("hf", model, shapes, "hf", "", "hf", "hf", hf)
      mtf = dict(shapes=shapes, model=model, bindings=[], config={})
      for mesh_shape, layout in (MAIN_JOB_MESH, FORMER_MAIN_JOB_MESH):
        add("mtf_switch", model, shapes, "main_job",
            mesh_shape or ONE_DEVICE, "tf", "tf",
            dict(mtf, what="main_job", mesh_shape=mesh_shape, layout=layout))
      for what in ("fed", "fed_all", "train_op", "empty_run"):
        add("mtf_switch", model, shapes, what, ONE_DEVICE, "tf", "tf",
            dict(mtf, what=what, mesh_shape="", layout=""))
      for name in experiments:
        experiment = EXPERIMENTS[name]
        env = experiment.get("env", {})
        if experiment.get("framework") == "hf":
          add("hf", model, shapes, name, "", name, "hf",
              dict(hf, threads=experiment.get("threads", 2)), env)
        elif model == "switch" or not experiment.get("switch_only"):
          session_config = experiment.get("config", {})
          mesh_shape, layout = experiment.get("mesh", ("", ""))
          own_process = experiment.get("own_process",
                                       bool(env or session_config))
          add("mtf_switch", model, shapes, name, mesh_shape or ONE_DEVICE,
              "tf_" + name if own_process else "tf", "tf",
              dict(mtf, what=experiment.get("what", "train_op"),
                   mesh_shape=mesh_shape, layout=layout,
                   bindings=experiment.get("bindings", []),
                   config=session_config,
                   prefetch_batches=experiment.get("prefetch_batches", 2)),
              env)
    add("seqio", "-", shapes, "seqio_next", "", "tf", "tf",
        dict(what="seqio_next"))
  return items


def time_rounds(workers, items, rounds, steps, after_round=None,
                out=sys.stdout):
  """{item index: [seconds per step of each round]}, items in turns (a new
  order each round; round 0 warms up); after_round(times) runs after each
  timed round (the caller saves them: a long run killed late keeps its
  rounds)."""
  times = collections.defaultdict(list)
  order = list(range(len(items)))
  rng = random.Random(0)
  for r in range(rounds + 1):
    rng.shuffle(order)
    start = time.time()
    for i in order:
      item = items[i]
      seconds = workers[item["worker"]].request(
          op="run", item=item["index"], steps=steps)["seconds"]
      if r:
        times[i].append(seconds / steps)
    print("round %d/%d (%s) in %.0f s" % (
        r, rounds, "warm-up" if not r else "timed", time.time() - start),
          file=out, flush=True)
    if r and after_round:
      after_round(times)
  return times


def rows(items, times):
  """Result rows: the item's labels, median s/step, spread (min-max over
  rounds), tokens/s and the ratio to HuggingFace's same model and shapes."""
  times = {int(n): seconds for n, seconds in times.items()}
  hf = {(i["shapes"], i["model"]): statistics.median(times[n])
        for n, i in enumerate(items) if i["variant"] == "hf"}
  result = []
  for n, item in enumerate(items):
    seconds = times[n]
    median = statistics.median(seconds)
    is_step = item["variant"] not in ("empty_run", "seqio_next")
    base = hf.get((item["shapes"], item["model"]))
    result.append({
        "framework": item["framework"], "model": item["model"],
        "shapes": item["shapes"], "variant": item["variant"],
        "mesh": item["mesh"], "s_per_step": round(median, 5),
        "spread_min": round(min(seconds), 5),
        "spread_max": round(max(seconds), 5),
        "tokens_per_s": round(TOKENS_PER_STEP / median) if is_step else "",
        "vs_hf": round(median / base, 3) if base else "",
        "params": item.get("params", ""),
        "ops_per_step": item.get("ops_per_step", ""),
        "optimizer_ops": item.get("optimizer_ops", "")})
  return result


def fixed_costs(result, full="b", shrunk="c"):
  """Per model, HuggingFace's and mtf_switch's step op at a shape set and
  at its shrunk twin: how much of the gap between them stays when the
  widths shrink to a few numbers (a cost per op, whatever its size), and
  each step's seconds per op executed at the shrunk shapes.

  Returns:
    list of dicts (model, hf_full, mtf_full, gap_full, hf_shrunk,
    mtf_shrunk, gap_shrunk, hf_us_per_op, mtf_us_per_op), for each model
    with both rows at both shape sets.
  """
  step = {(r["framework"], r["model"], r["shapes"]): r for r in result
          if r["variant"] in ("hf", "train_op")}
  table = []
  for model in dict.fromkeys(r["model"] for r in result):
    keys = [(framework, model, shapes) for shapes in (full, shrunk)
            for framework in ("hf", "mtf_switch")]
    if not all(k in step for k in keys):
      continue
    hf_full, mtf_full, hf_shrunk, mtf_shrunk = (step[k] for k in keys)
    table.append(dict(
        model=model, hf_full=hf_full["s_per_step"],
        mtf_full=mtf_full["s_per_step"],
        gap_full=round(mtf_full["s_per_step"] - hf_full["s_per_step"], 5),
        hf_shrunk=hf_shrunk["s_per_step"],
        mtf_shrunk=mtf_shrunk["s_per_step"],
        gap_shrunk=round(mtf_shrunk["s_per_step"] -
                         hf_shrunk["s_per_step"], 5),
        hf_us_per_op=round(1e6 * hf_shrunk["s_per_step"] /
                           hf_shrunk["ops_per_step"], 1),
        mtf_us_per_op=round(1e6 * mtf_shrunk["s_per_step"] /
                            mtf_shrunk["ops_per_step"], 1)))
  return table


def _machine():
  """One line: CPU, cores, thread settings."""
  model = ""
  try:
    with open("/proc/cpuinfo") as f:
      model = next((l.split(":", 1)[1].strip() for l in f
                    if l.startswith("model name")), "")
  except OSError:
    pass
  return ("%s, nproc %d (os.sched_getaffinity), Python %s; torch threads 2 "
          "(torch.set_num_threads) and TensorFlow's default intra/inter-op "
          "threads (0: one per core) unless the row says otherwise"
          % (model or platform.processor(), len(os.sched_getaffinity(0)),
             platform.python_version()))


def _load():
  try:
    with open("/proc/loadavg") as f:
      return " ".join(f.read().split()[:3])
  except OSError:
    return "?"


def write(result, equivalence, header, out_dir, name="peer_hf"):
  """peer_hf.csv, .md and .png in out_dir; returns the path without
  extension."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, name)
  with open(path + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(result[0]))
    writer.writeheader()
    writer.writerows(result)
  with open(path + ".md", "w") as f:
    f.write(header)
    f.write("\n\n## FLOPs-equivalence\n\n| shapes | model | mtf_switch "
            "params | HF params | expert params (mtf / HF) | capacity |\n"
            "|---|---|---|---|---|---|\n")
    for row in equivalence:
      f.write("| %(shapes)s | %(model)s | %(mtf_params)s | %(hf_params)s | "
              "%(mtf_experts)s / %(hf_experts)s | %(capacity)s |\n" % row)
    f.write("\n## Seconds per step\n\nMedian over rounds, spread min-max; "
            "vs_hf: the median over HuggingFace's same model and shapes; "
            "ops_per_step: TensorFlow nodes executed in a traced run, or "
            "top-level torch ops in a profiled step; optimizer_ops: those "
            "of the TensorFlow nodes that update the weights.\n\n| " +
            " | ".join(result[0]) + " |\n|" + "---|" * len(result[0]) + "\n")
    for row in result:
      f.write("| " + " | ".join(str(v) for v in row.values()) + " |\n")
    costs = fixed_costs(result)
    if costs:
      f.write("\n## Fixed costs\n\nThe step op alone (HF: `hf`, "
              "mtf_switch: `train_op`), s/step, at shape set b and at set "
              "c (set b's layers, ops and batch, every width a few "
              "numbers); gap: mtf_switch's minus HuggingFace's; us/op: set "
              "c's step over the ops it executes.\n\n| model | HF b | "
              "mtf b | gap b | HF c | mtf c | gap c | HF us/op c | mtf "
              "us/op c |\n|---|---|---|---|---|---|---|---|---|\n")
      for row in costs:
        f.write("| " + " | ".join(str(v) for v in row.values()) + " |\n")
    f.write("\n## Variants\n\n")
    measured = {row["variant"] for row in result}
    for key, what in VARIANTS.items():
      if key in measured:
        f.write("- `%s`: %s\n" % (key, what))
  plot(result, path + ".png")
  return path


def plot(result, path):
  """Bars of s/step per variant, Switch and dense side by side, one panel
  per shape set (log scale: the overhead rows are 1000x smaller)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  shape_sets = sorted({r["shapes"] for r in result})
  fig, axes = plt.subplots(len(shape_sets), 1,
                           figsize=(12, 4.2 * len(shape_sets)), squeeze=False)
  for ax, shapes in zip(axes[:, 0], shape_sets):
    these = [r for r in result if r["shapes"] == shapes]
    # HuggingFace first, then the former 2-position mesh, one device, data
    # (a stable sort keeps the rows' order within each).
    groups = ("HF", "mtf 2-pos", "mtf 1 dev", "mtf", "seqio")
    labels = sorted(dict.fromkeys(_bar_label(r) for r in these),
                    key=lambda l: [g in l for g in groups].index(True))
    for k, (model, color) in enumerate((("switch", "C0"), ("dense", "C1"),
                                        ("-", "C7"))):
      xs, ys, lows, highs = [], [], [], []
      for r in these:
        if r["model"] == model:
          xs.append(labels.index(_bar_label(r)) + (k - 0.5) * 0.4
                    if model != "-" else labels.index(_bar_label(r)))
          ys.append(r["s_per_step"])
          lows.append(r["s_per_step"] - r["spread_min"])
          highs.append(r["spread_max"] - r["s_per_step"])
      if xs:
        ax.bar(xs, ys, width=0.4, color=color, yerr=[lows, highs],
               capsize=2, label=model if model != "-" else "data only")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("s / step (median, min-max)")
    ax.set_title("shape set %s, batch %d, inputs %d, targets %d"
                 % (shapes, BATCH, INPUTS, TARGETS), fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _bar_label(row):
  if row["framework"] == "hf":
    return {"hf": "HF PyTorch", "hf_threads1": "HF 1 thread",
            "hf_passive": "HF OMP passive"}.get(row["variant"],
                                                row["variant"])
  if row["framework"] == "seqio":
    return "seqio next batch"
  mesh = {FORMER_MAIN_JOB_MESH[0]: "2-pos", ONE_DEVICE: "1 dev"}.get(
      row["mesh"], row["mesh"])
  return "mtf %s %s" % (mesh, row["variant"])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shapes", default="a,b,c",
                      help="comma-separated shape sets (a, b, c)")
  parser.add_argument("--models", default="switch,dense")
  parser.add_argument("--experiments", default=",".join(EXPERIMENTS),
                      help="comma-separated cheap settings to add as rows "
                           "(%s), or ''" % ", ".join(EXPERIMENTS))
  # Many short rounds: on a shared machine a burst of load hits a round or
  # two of some items, and the median over rounds sets them aside.
  parser.add_argument("--rounds", type=int, default=15)
  parser.add_argument("--steps", type=int, default=4,
                      help="steps of every item per round")
  parser.add_argument("--out", default="benchmarks/results")
  parser.add_argument("--note", default="",
                      help="a line for the Markdown (e.g. the commit)")
  parser.add_argument("--report_only", action="store_true",
                      help="rewrite the CSV, Markdown and PNG from --out's "
                           "<name>.json (the times a run saved)")
  parser.add_argument("--name", default="peer_hf",
                      help="the results' file name, without extension")
  parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    worker_main(*args.worker)
    return
  state_path = os.path.join(args.out, args.name + ".json")
  if args.report_only:
    with open(state_path) as f:
      state = json.load(f)
  else:
    state = run(args, parser, state_path)
  path = report(state, args.out, args.name)
  with open(path + ".md") as f:
    print(f.read())


def run(args, parser, state_path):
  """Builds the workers, times the rounds and returns the run's state
  (also saved to state_path after every round)."""
  shape_sets = args.shapes.split(",")
  model_kinds = args.models.split(",")
  experiments = [e for e in args.experiments.split(",") if e]
  unknown = (sorted(set(shape_sets) - set(SHAPE_SETS)) +
             sorted(set(model_kinds) - {"switch", "dense"}) +
             sorted(set(experiments) - set(EXPERIMENTS)))
  if unknown:
    parser.error("unknown %s" % unknown)

  from mtf_switch.t5 import compat  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch import models  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import data  # pylint: disable=g-import-not-at-top
  tf.disable_eager_execution()
  vocab_size = data.vocab_size(TASK)
  hf_configs, notes = {"vocab_size": vocab_size}, {}
  for shapes in shape_sets:
    for model in model_kinds:
      parse_gin(shapes, model)
      mtf_model = models.make_model(vocab_size)
      hf_configs[(shapes, model)] = hf_twin_config(mtf_model)
      notes[(shapes, model)] = capacity_note(mtf_model)
  items = plan(shape_sets, model_kinds, experiments, hf_configs)
  state = dict(date=time.strftime("%Y-%m-%d"), rounds=args.rounds,
               steps=args.steps, note=args.note, machine=_machine(),
               versions=_versions(), vocab_size=vocab_size,
               load_before=_load())
  log_dir = tempfile.mkdtemp(prefix="peer_hf_")
  workers = {}
  # All workers build at once (building is not timed); each then waits.
  for name in dict.fromkeys(i["worker"] for i in items):  # in order
    mine = [i for i in items if i["worker"] == name]
    for index, item in enumerate(mine):
      item["index"] = index
    print("building worker %s (%d items; log %s/%s.log)" % (
        name, len(mine), log_dir, name), flush=True)
    workers[name] = Worker(name, mine[0]["kind"], [i["spec"] for i in mine],
                           mine[0]["env"], log_dir)
  for name, worker in workers.items():
    mine = [i for i in items if i["worker"] == name]
    for item, info in zip(mine, worker.receive()["ready"]):
      item.update(info)
  state["items"] = [{k: v for k, v in i.items() if k != "spec"}
                    for i in items]
  state["equivalence"] = equivalence(items, hf_configs, notes)
  for row in state["equivalence"]:
    print("parameters, shape set %(shapes)s, %(model)s: mtf_switch "
          "%(mtf_params)s, HF %(hf_params)s" % row, flush=True)
  os.makedirs(args.out, exist_ok=True)

  def save(times):
    state["times"] = times
    state["load_after"] = _load()
    with open(state_path, "w") as f:
      json.dump(state, f, indent=1)

  try:
    time_rounds(workers, items, args.rounds, args.steps, after_round=save)
  finally:
    for worker in workers.values():
      worker.close()
  return state


def equivalence(items, hf_configs, notes):
  """Rows of the FLOPs-equivalence table: both sides' parameter counts
  (all, experts') and how each caps the experts' tokens."""
  table = []
  for shapes, model in dict.fromkeys((i["shapes"], i["model"])
                                     for i in items if i["model"] != "-"):
    mine = {i["framework"]: i for i in items
            if (i["shapes"], i["model"]) == (shapes, model)
            and i["variant"] in ("hf", "train_op")}
    capacity = notes[(shapes, model)]
    if capacity:
      capacity = ("mtf_switch: %s; HF: expert_capacity %d per sequence"
                  % (capacity,
                     hf_configs[(shapes, model)][1]["expert_capacity"]))
    table.append(dict(
        shapes=shapes, model=model,
        mtf_params=mine["mtf_switch"]["params"],
        hf_params=mine["hf"]["params"],
        mtf_experts=mine["mtf_switch"]["expert_params"],
        hf_experts=mine["hf"]["expert_params"], capacity=capacity or "-"))
  return table


def report(state, out_dir, name="peer_hf"):
  """Writes <name>.csv, .md and .png from a run's state; returns the path
  without extension."""
  header = "\n".join([
      "# mtf_switch against HuggingFace (PyTorch) on this CPU",
      "",
      "Training steps side by side in one run (%s, `python benchmarks/"
      "peer_hf.py`): %d rounds of %d steps of every item after a warm-up "
      "round, items in a new order each round, each framework and setting "
      "in its own worker process." % (
          state["date"], len(next(iter(state["times"].values()))),
          state["steps"]),
      "",
      "- Machine: %s." % state["machine"],
      "- Load average (1, 5, 15 min) before / after: %s / %s." % (
          state["load_before"], state["load_after"]),
      "- Versions: torch %s, transformers %s, TensorFlow %s, "
      "mesh-tensorflow %s." % tuple(state["versions"]),
      "- Batches: %d pre-made batches of %d x (%d inputs + %d targets) "
      "token ids, uniform in [1, %d) (the task's vocabulary; no padding), "
      "drawn once from np.random.RandomState(%d): the same arrays for both "
      "frameworks, in the same order (int32 fed to TensorFlow, int64 "
      "tensors to PyTorch). The `main_job` rows train on the seqio task "
      "%s instead, as the main job does. tokens/s counts %d tokens a step, "
      "as the main job's progress line." % (
          NUM_BATCHES, BATCH, INPUTS, TARGETS, state["vocab_size"],
          BATCH_SEED, TASK, TOKENS_PER_STEP),
      "- Both sides: Adafactor at a fixed learning rate %g (mesh-tensorflow's"
      " AdafactorOptimizer as the main job makes it; HF's transformers."
      "optimization.Adafactor with relative_step=False, scale_parameter=True,"
      " decay_rate -0.8, clip 1.0, no beta1), dropout 0, router jitter 0.01,"
      " load-balancing loss 0.01 (HF: output_router_logits=True)." % (
          LEARNING_RATE),
      "- What differs: mesh-tensorflow factors Adafactor's second moment "
      "only for weights whose two largest dimensions are >= 128 (in shape "
      "set b: none), HF for every matrix; mesh-tensorflow adds a z-loss "
      "of 1e-4 on the output logits; capacity (table below): HF computes "
      "each expert on the tokens routed to it, mtf_switch's einsum "
      "dispatch computes experts x capacity slots per group.",
  ] + (["- %s" % state["note"]] if state["note"] else []))
  return write(rows(state["items"], state["times"]), state["equivalence"],
               header, out_dir, name)


def _versions():
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  return tuple(importlib.metadata.version(p) for p in (
      "torch", "transformers", "tensorflow", "mesh-tensorflow"))


if __name__ == "__main__":
  main()
