r"""Checkpoints that T5 reads, compared first with what T5 will build.

T5 (its binary `t5_mesh_transformer`, the drop-in
`mtf_switch.t5.mesh_transformer_main`, and `MtfModel`) restores a checkpoint
into the variables of the graph it builds.  When the two differ it fails
only as its session starts, with an error that names neither the cause nor
the fix: "expected dtype bfloat16 does not equal original dtype float" for
every weight, or, for a weight of another shape, "Expected size[2] in
[0, 128], but got 256" at a slice of a stacked variable.  The checks here
compare the checkpoint first and raise `CheckpointMismatchError`, whose
message names the gin binding (or file) that fixes it.

The usual case is a checkpoint of mtf_switch's main job
(`python -m mtf_switch.training.train`).  Its weights are float32, while
T5 keeps weights in bfloat16 unless told otherwise
(`utils.get_variable_dtype.master_dtype`; Adafactor's slots are float32
either way): `from_main_job.gin` binds float32.  The main job also records the vocabulary it trained with
(`vocabulary.json`, see `mtf_switch.training.data`), which T5 must read it
with.

Where the checks run:

- `mtf_switch.t5.mtf_model.MtfModel`: before each of its estimators is
  built (`check_master_dtype`, `check_vocabulary`).
- T5's binaries: while T5 builds its graph, from the Switch models'
  Bitransformer (`mtf_switch.models.ScaledInitBitransformer`), on every
  variable built so far (`check_t5_binary_graph`).  T5's binary hands its
  --model_dir to `utils.run` itself, not through gin, so the checkpoint
  is found from the binary's flags and gin bindings.
"""
import json
import os
import re

from absl import flags
import gin
import tensorflow.compat.v1 as tf

# The shipped gin file (gin/from_main_job.gin) with what T5 needs to read a
# checkpoint of the main job.
FROM_MAIN_JOB_GIN = "from_main_job.gin"
# The gin config that the main job (and T5) write next to checkpoints.
OPERATIVE_CONFIG = "operative_config.gin"


class CheckpointMismatchError(ValueError):
  """T5 would fail reading a checkpoint, or read it wrongly; the message
  names the binding that fixes it."""


# mesh-tensorflow's optimizer slots (Adafactor's, Adam's): float32 whatever
# the master dtype of their weight.
_OPTIMIZER_SLOT = re.compile(r"(_slot_(v|vr|vc|m)|/adam_[mv])$")


def check_master_dtype(checkpoint, master_dtype):
  """Checks that T5 can restore the checkpoint's weights in master_dtype.

  For a caller that knows T5's master dtype but not yet its variables
  (MtfModel, before its estimator builds a graph): T5 builds every weight
  in that dtype, and the optimizer's slots in float32.

  Args:
    checkpoint: a checkpoint path.
    master_dtype: tf.DType, T5's `utils.get_variable_dtype().master_dtype`.

  Raises:
    CheckpointMismatchError: naming the binding, if the checkpoint's
      floating-point weights are of another dtype.
  """
  dtypes = tf.train.load_checkpoint(checkpoint).get_variable_to_dtype_map()
  check_dtypes(checkpoint, {name: master_dtype
                            for name, dtype in dtypes.items()
                            if dtype.is_floating
                            and not _OPTIMIZER_SLOT.search(name)})


def check_dtypes(checkpoint, variables):
  """Checks the dtypes of variables that the checkpoint holds.

  Args:
    checkpoint: a checkpoint path.
    variables: dict from checkpoint name to the tf.DType T5 restores it in;
      names the checkpoint lacks are not checked here.

  Raises:
    CheckpointMismatchError: naming `utils.get_variable_dtype.master_dtype`
      and the dtype to bind it to.
  """
  dtypes = tf.train.load_checkpoint(checkpoint).get_variable_to_dtype_map()
  differ = sorted(name for name, dtype in variables.items()
                  if name in dtypes
                  and dtypes[name].base_dtype != tf.as_dtype(dtype).base_dtype)
  if not differ:
    return
  name = differ[0]
  saved, wanted = dtypes[name].base_dtype, tf.as_dtype(variables[name])
  binding = 'utils.get_variable_dtype.master_dtype = "%s"' % saved.name
  if saved == tf.float32:
    # The main job's checkpoints, read with T5's default bfloat16.
    fix = ("Checkpoints of mtf_switch's main job are float32: add "
           "--gin_file=%s (MtfModel: gin.parse_config_file(\"%s\") before "
           "building it), or the binding %s"
           % (FROM_MAIN_JOB_GIN, FROM_MAIN_JOB_GIN, binding))
  else:
    fix = ("Bind %s%s" % (binding, " (T5's default: leave out %s)"
                          % FROM_MAIN_JOB_GIN if saved == tf.bfloat16
                          else ""))
  raise CheckpointMismatchError(
      "T5 would restore %s into %s variables, but it holds %s values "
      "(%s%s), and restoring fails (\"expected dtype %s does not equal "
      "original dtype %s\"). %s." % (
          checkpoint, wanted.name, saved.name, name,
          " and %d more" % (len(differ) - 1) if len(differ) > 1 else "",
          wanted.name, "float" if saved == tf.float32 else saved.name, fix))


def check_shapes(checkpoint, shapes, restores_all=True):
  """Checks that the checkpoint holds T5's variables in their shapes.

  Args:
    checkpoint: a checkpoint path.
    shapes: dict from checkpoint name to the shape (list of ints) of T5's
      variable.
    restores_all: whether T5 restores every variable from the checkpoint
      (resuming, evaluating), so that each must be there; fine-tuning
      (`init_checkpoint`) restores those it finds.

  Raises:
    CheckpointMismatchError: naming the first mismatches and the gin
      config the checkpoint was trained with.
  """
  saved = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
  missing = sorted(name for name in shapes if name not in saved)
  differ = ["%s is %s there, %s here" % (name, saved[name], shape)
            for name, shape in sorted(shapes.items())
            if name in saved and list(saved[name]) != list(shape)]
  if not differ and not (restores_all and missing):
    return
  details = differ[:3] + (["%d variables missing there (%s)" % (
      len(missing), ", ".join(missing[:3]))] if restores_all and missing
                          else [])
  raise CheckpointMismatchError(
      "T5 builds another model than the one in %s: %s. Give T5 the gin "
      "config the checkpoint was trained with: the main job and T5 write "
      "it next to their checkpoints (--gin_file=%s), or the same model "
      "file, e.g. --gin_file=models/switch_tiny.gin." % (
          checkpoint, "; ".join(details),
          os.path.join(os.path.dirname(checkpoint), OPERATIVE_CONFIG)))


def check_vocabulary(checkpoint, vocabulary):
  """Checks T5's vocabulary against the one the checkpoint's run recorded.

  A checkpoint of the main job lies next to `vocabulary.json`; other
  checkpoints are not checked here (their embedding's shape is, by
  `check_shapes`).  A vocabulary of the same size but other pieces would
  restore without an error and score nonsense.

  Args:
    checkpoint: a checkpoint path.
    vocabulary: the seqio vocabulary T5 reads with, or an (inputs, targets)
      pair of them, or None (nothing to check).

  Raises:
    CheckpointMismatchError: naming the task the checkpoint was trained on
      and the binding that selects T5's vocabulary.
  """
  # Imported here: the task registry imports the whole package, whose
  # models import this module.
  from mtf_switch.training import data  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(checkpoint), data.VOCABULARY_RECORD)
  if vocabulary is None or not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    recorded = json.load(f)
  vocabularies = (vocabulary if isinstance(vocabulary, (tuple, list))
                  else (vocabulary,))
  for each in vocabularies:
    here = data.vocabulary_identity(each)
    if all(recorded.get(key) == value for key, value in here.items()):
      continue
    task = recorded.get("task")
    raise CheckpointMismatchError(
        "%s was trained with the vocabulary of task %r (%s, %s ids), but T5 "
        "would read it with another (%s, %s ids%s). Give T5 a task of that "
        "vocabulary: in T5's binary MIXTURE_NAME = %r (dataset.gin binds "
        "mesh_transformer.get_vocabulary.mixture_or_task_name to it); with "
        "MtfModel that task, or vocabulary="
        "seqio.get_mixture_or_task(%r).output_features[\"targets\"]"
        ".vocabulary." % (
            checkpoint, task, recorded.get("class"),
            recorded.get("vocab_size"), here["class"], here["vocab_size"],
            ", other pieces" if here["vocab_size"] == recorded.get(
                "vocab_size") else "", task, task))


def checkpoint_t5_binary_reads():
  """The checkpoint T5's binary will restore, if this is T5's binary.

  T5's binary (`t5_mesh_transformer`, `mtf_switch.t5.mesh_transformer_main`)
  defines --model_dir and --module_import.  Resuming training or
  evaluating, it restores a checkpoint of --model_dir (evaluation may pick
  an older one: they share their dtypes and shapes); starting a training
  run, `utils.run.init_checkpoint`'s weights (fine-tuning).

  Returns:
    (checkpoint path or None, whether T5 restores every variable from it).
  """
  if not ("model_dir" in flags.FLAGS and "module_import" in flags.FLAGS
          and flags.FLAGS.is_parsed()):
    return None, False
  if getattr(flags.FLAGS, "use_model_api", False):
    return None, False  # T5's MtfModel runs the modes, not utils.run
  model_dir = flags.FLAGS.model_dir
  latest = model_dir and tf.train.latest_checkpoint(model_dir)
  if latest:
    return latest, True
  init_checkpoint = _gin_value("utils.run.init_checkpoint", None)
  if (_gin_value("utils.run.mode", "train") == "train"
      and isinstance(init_checkpoint, str)):  # not a macro left unresolved
    return init_checkpoint, False
  return None, False


def _gin_value(name, default):
  try:
    return gin.query_parameter(name)
  except ValueError:  # not bound
    return default


def check_t5_binary_graph(mtf_graph):
  """In T5's binary, checks the variables built so far against the
  checkpoint it will restore (`checkpoint_t5_binary_reads`); elsewhere
  does nothing.

  Args:
    mtf_graph: the mtf.Graph T5 is building.

  Raises:
    CheckpointMismatchError: as check_vocabulary, check_dtypes and
      check_shapes, in that order (a wrong vocabulary shows first as the
      embedding's shape).
  """
  checkpoint, restores_all = checkpoint_t5_binary_reads()
  if not checkpoint:
    return
  variables = mtf_graph.all_variables
  vocabulary = _gin_value("utils.run.vocabulary", None)
  # T5's main binds the vocabulary object itself; a gin reference not yet
  # called (another caller of utils.run) has nothing to compare.
  if hasattr(vocabulary, "vocab_size") or isinstance(vocabulary, tuple):
    check_vocabulary(checkpoint, vocabulary)
  check_dtypes(checkpoint, {v.name: v.master_dtype for v in variables})
  check_shapes(checkpoint,
               {v.name: v.shape.to_integer_list for v in variables},
               restores_all)
