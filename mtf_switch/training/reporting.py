"""What a run shows: console lines and TensorBoard summaries."""
import collections

import tensorflow.compat.v1 as tf


def scalar_summary(scalars):
  """A tf.Summary of {tag: number}, for TensorBoard."""
  return tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=float(v))
                           for tag, v in sorted(scalars.items())])


def progress_line(step, steps, loss, steps_per_second, tokens_per_step):
  """"step 25/300  loss 5.8377  3.89 steps/s  4974 tokens/s"."""
  return ("step %d/%d  loss %.4f  %.2f steps/s  %.0f tokens/s"
          % (step, steps, loss, steps_per_second,
             steps_per_second * tokens_per_step))


def summarize_metrics(values):
  """One console line per Switch layer: dropped fraction and expert load.

  Args:
    values: dict from "<layer>/<metric>" to numpy values.

  Returns:
    list of str.
  """
  by_layer = collections.OrderedDict()
  for name, value in values.items():
    layer, metric = name.rsplit("/", 1)
    by_layer.setdefault(layer, {})[metric] = value
  lines = []
  for layer, m in by_layer.items():
    load = " ".join("%.2f" % f for f in m["expert_fraction"])
    lines.append(
        "  %s: dropped %.3f  aux_loss %.4f  confidence %.3f  "
        "entropy %.3f  expert load [%s]"
        % (layer, m["dropped_fraction"], m["aux_loss"],
           m["router_confidence"], m["router_entropy"], load))
  return lines
