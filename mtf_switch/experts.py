"""The experts' dense layers: batched matmuls with a reordered gradient.

The experts' weights are `[experts, d_in, d_out]` (mesh-tensorflow's
`mtf.layers.dense` with `expert_dims`, same variables and initializers).
mesh-tensorflow differentiates `einsum([x, kernel])` as `einsum([dy,
kernel])` and `einsum([dy, x])`; with few rows per expert, TensorFlow's CPU
batched matmul in that operand order transposes its result and runs several
times slower than with the operands the other way round
(benchmarks/expert_matmul.py: about 2x for both gradients at 128 experts).
`matmul` computes the same gradients with `kernel` and `x` first.  The
numbers are the same; under XLA on TPU the order does not matter.
"""
import functools

import mesh_tensorflow as mtf


def _matmul_grad(explicit_inputs, all_inputs, forward_operations, outputs,
                 output_grads):
  """Gradients of `matmul`: [d x, d kernel], operands in the fast order."""
  del all_inputs, forward_operations, outputs  # unused
  x, kernel = explicit_inputs
  dy, = output_grads
  return [mtf.einsum([kernel, dy], output_shape=x.shape),
          mtf.einsum([x, dy], output_shape=kernel.shape)]


def matmul(x, kernel, output_shape):
  """einsum([x, kernel]) with the gradient of `_matmul_grad`.

  Args:
    x: [experts, groups, capacity, d_in].
    kernel: [experts, d_in, d_out], in x's dtype.
    output_shape: [experts, groups, capacity, d_out].

  Returns:
    mtf.Tensor of output_shape.
  """
  return mtf.custom_gradient(
      lambda x, kernel: mtf.einsum([x, kernel], output_shape=output_shape),
      _matmul_grad, [x, kernel])


def kernel(x, reduced_dim, new_dim, experts_dim, variable_dtype, name):
  """The experts' kernel `<name>/kernel`, as mtf.layers.dense makes it.

  Args:
    x: an mtf.Tensor on the kernel's mesh, in the dtype to use it in.
    reduced_dim: mtf.Dimension d_in.
    new_dim: mtf.Dimension d_out.
    experts_dim: mtf.Dimension of the experts.
    variable_dtype: mtf.VariableDType.
    name: variable scope of the kernel.

  Returns:
    [experts, d_in, d_out], in x's dtype.
  """
  return mtf.layers.get_dense_kernel_weights(
      x, [new_dim], [reduced_dim], [experts_dim], kernel_initializer=None,
      name=name, variable_dtype=variable_dtype)


def kernel_names(name, activations):
  """Scopes of dense_product's kernels: `name`, or `<name>_<i>` for
  several activations (mtf.layers.dense_product's names)."""
  if len(activations) == 1:
    return [name]
  return ["%s_%d" % (name, i) for i in range(len(activations))]


def dense(x, new_dim, experts_dim, variable_dtype, name, activation=None):
  """Like mtf.layers.dense(x, new_dim, expert_dims=[experts_dim]), no bias.

  Args:
    x: [experts, groups, capacity, d_in].
    new_dim: mtf.Dimension d_out.
    experts_dim: mtf.Dimension of the experts.
    variable_dtype: mtf.VariableDType.
    name: variable scope of the kernel (`<name>/kernel`).
    activation: None, or an mtf function name such as "relu".

  Returns:
    [experts, groups, capacity, d_out].
  """
  reduced_dim = x.shape.dims[-1]
  y = matmul(x, kernel(x, reduced_dim, new_dim, experts_dim, variable_dtype,
                       name), x.shape - [reduced_dim] + [new_dim])
  if activation in (None, "linear"):
    return y
  return getattr(mtf, activation)(y)


def dense_product(x, new_dim, experts_dim, variable_dtype, name,
                  activations):
  """Like mtf.layers.dense_product: the product of one `dense` per activation.

  Args:
    x: [experts, groups, capacity, d_in].
    new_dim: mtf.Dimension d_out.
    experts_dim: mtf.Dimension of the experts.
    variable_dtype: mtf.VariableDType.
    name: kernels are `<name>/kernel`, or `<name>_<i>/kernel` for several.
    activations: an activation name or a list of them (GEGLU: ["gelu",
      "linear"]).

  Returns:
    [experts, groups, capacity, d_out].
  """
  if not isinstance(activations, list):
    activations = [activations]
  factors = [
      dense(x, new_dim, experts_dim, variable_dtype, scope, activation)
      for scope, activation in zip(kernel_names(name, activations),
                                   activations)]
  return functools.reduce(mtf.multiply, factors)
