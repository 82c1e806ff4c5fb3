"""entropy_jax: automatic entropy (temperature) tuning for Soft Actor-Critic in JAX.

The public API. One module per concept:

* `state`: `EntropyState` and its constructors.
* `losses`: the continuous and discrete temperature losses.
* `update`: `apply_gradients` and the fused one-call updates.
* `targets`: default target entropies.
* `schedules`: the target as a function of the update count.
* `tes_sac`: the TES-SAC feedback anneal of the discrete target.
* `structured`: a temperature per branch of a structured action (MultiDiscrete,
  hybrid, Tuple / Dict spaces), updated in one call.
* `optimizers`: the default optimizer, and PyTorch's optimizers in optax.
* `compat`: Velora-compatible `EntropyModule` and `EntropyModuleDiscrete`.
* `checkpoint`: saving and restoring states.
* `sharding`: populations across devices and hosts.
* `debug`: opt-in `checkify` checks of the discrete inputs.
"""

from entropy_jax import checkpoint, compat, debug, optimizers, schedules, sharding, structured, tes_sac
from entropy_jax.checkpoint import CheckpointError, restore_checkpoint, save_checkpoint
from entropy_jax.compat import (
  EntropyModule,
  EntropyModuleDiscrete,
  EntropyParameters,
  LossMismatchError,
  NonFiniteLossError,
)
from entropy_jax.losses import continuous_entropy, continuous_loss, discrete_entropy, discrete_loss
from entropy_jax.optimizers import adam
from entropy_jax.schedules import annealed_discrete_target, cosine_schedule, exponential_schedule, linear_schedule
from entropy_jax.sharding import (
  from_process_local,
  gather_population,
  member_sharding,
  population_mesh,
  shard_mapped_update,
  shard_population,
  sharded_update,
)
from entropy_jax.state import (
  ALPHA_MAX,
  ALPHA_MIN,
  LOG_ALPHA_MAX,
  LOG_ALPHA_MIN,
  EntropyState,
  fixed_alpha_state,
  init_entropy_state,
  init_population,
)
from entropy_jax.structured import (
  Categorical,
  Continuous,
  MultiCategorical,
  action_structure,
  branch_alphas,
  branch_mask,
  init_structured_state,
  structured_update,
)
from entropy_jax.targets import (
  DISCRETE_TARGET_RATIO,
  PAPER_DISCRETE_TARGET_RATIO,
  continuous_target,
  discrete_target,
  masked_discrete_target,
  velora_discrete_target,
)
from entropy_jax.tes_sac import TesSacState, tes_sac_init, tes_sac_update
from entropy_jax.update import apply_gradients, continuous_update, discrete_update

__version__ = "0.1.0"

__all__ = [
  "ALPHA_MAX",
  "ALPHA_MIN",
  "Categorical",
  "CheckpointError",
  "Continuous",
  "DISCRETE_TARGET_RATIO",
  "EntropyModule",
  "EntropyModuleDiscrete",
  "EntropyParameters",
  "EntropyState",
  "LOG_ALPHA_MAX",
  "LOG_ALPHA_MIN",
  "LossMismatchError",
  "MultiCategorical",
  "NonFiniteLossError",
  "PAPER_DISCRETE_TARGET_RATIO",
  "TesSacState",
  "action_structure",
  "adam",
  "annealed_discrete_target",
  "apply_gradients",
  "branch_alphas",
  "branch_mask",
  "checkpoint",
  "compat",
  "continuous_entropy",
  "continuous_loss",
  "continuous_target",
  "continuous_update",
  "cosine_schedule",
  "debug",
  "discrete_entropy",
  "discrete_loss",
  "discrete_target",
  "discrete_update",
  "exponential_schedule",
  "fixed_alpha_state",
  "from_process_local",
  "gather_population",
  "init_entropy_state",
  "init_population",
  "init_structured_state",
  "linear_schedule",
  "masked_discrete_target",
  "member_sharding",
  "optimizers",
  "population_mesh",
  "restore_checkpoint",
  "save_checkpoint",
  "schedules",
  "shard_mapped_update",
  "shard_population",
  "sharded_update",
  "sharding",
  "structured",
  "structured_update",
  "tes_sac",
  "tes_sac_init",
  "tes_sac_update",
  "velora_discrete_target",
]
