"""The population update that issue 2's speed goal measures, defined once.

`grad_then_apply(state, log_probs)` is `apply_gradients(state,
grad(continuous_loss))` for one member; the benchmarks `jax.vmap` it over a
stacked population and `[N, B]` log_probs (`run.py` times it against the
`jnp.sum` floor, `hlo_report.py` reads its optimized HLO, and
`optimizer_cost.py` times it with several optimizers). Importing this module
imports nothing heavy: `run.py` measures what `import entropy_jax` costs.
"""

from __future__ import annotations

GRAD_THEN_APPLY = "vmap(apply_gradients(grad(continuous_loss)))"


def grad_then_apply(state, log_probs):
  """One member's update: the gradient of `continuous_loss`, then one step."""
  import jax

  import entropy_jax as ej

  grad = jax.grad(ej.continuous_loss)(state.log_alpha, log_probs, state.target)
  return ej.apply_gradients(state, grad)
