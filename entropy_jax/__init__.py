"""entropy_jax: automatic entropy (temperature) tuning for Soft Actor-Critic in JAX."""

from entropy_jax import debug
from entropy_jax import schedules
from entropy_jax import sharding
from entropy_jax.checkpoint import CheckpointError
from entropy_jax.checkpoint import restore_checkpoint
from entropy_jax.checkpoint import save_checkpoint
from entropy_jax.compat import EntropyModule
from entropy_jax.compat import EntropyModuleDiscrete
from entropy_jax.compat import EntropyParameters
from entropy_jax.compat import LossMismatchError
from entropy_jax.compat import NonFiniteLossError
from entropy_jax.losses import continuous_entropy
from entropy_jax.losses import continuous_loss
from entropy_jax.losses import discrete_entropy
from entropy_jax.losses import discrete_loss
from entropy_jax.schedules import TesSacState
from entropy_jax.schedules import annealed_discrete_target
from entropy_jax.schedules import tes_sac_init
from entropy_jax.schedules import tes_sac_update
from entropy_jax.sharding import shard_mapped_update
from entropy_jax.sharding import shard_population
from entropy_jax.sharding import sharded_update
from entropy_jax.state import EntropyState
from entropy_jax.state import fixed_alpha_state
from entropy_jax.state import init_entropy_state
from entropy_jax.state import init_population
from entropy_jax.targets import continuous_target
from entropy_jax.targets import discrete_target
from entropy_jax.targets import masked_discrete_target
from entropy_jax.targets import velora_discrete_target
from entropy_jax.update import apply_gradients
from entropy_jax.update import continuous_update
from entropy_jax.update import discrete_update

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "EntropyModule",
    "EntropyModuleDiscrete",
    "EntropyParameters",
    "EntropyState",
    "LossMismatchError",
    "NonFiniteLossError",
    "TesSacState",
    "annealed_discrete_target",
    "fixed_alpha_state",
    "schedules",
    "shard_mapped_update",
    "shard_population",
    "sharded_update",
    "sharding",
    "tes_sac_init",
    "tes_sac_update",
    "apply_gradients",
    "continuous_entropy",
    "continuous_loss",
    "continuous_target",
    "continuous_update",
    "debug",
    "discrete_entropy",
    "discrete_loss",
    "discrete_target",
    "discrete_update",
    "init_entropy_state",
    "init_population",
    "masked_discrete_target",
    "restore_checkpoint",
    "save_checkpoint",
    "velora_discrete_target",
]
