"""Tests of the public API, `entropy_jax/__init__.py`: one sorted list, consistent exports."""

import inspect
import types

import entropy_jax as ej

PUBLIC_MODULES = ("checkpoint", "compat", "debug", "optimizers", "schedules", "sharding", "tes_sac")


def test_all_is_one_sorted_list_of_names_that_exist():
  assert ej.__all__ == sorted(set(ej.__all__))
  for name in ej.__all__:
    assert hasattr(ej, name), name


def test_every_public_module_is_exported():
  for name in PUBLIC_MODULES:
    assert isinstance(getattr(ej, name), types.ModuleType) and name in ej.__all__


def test_exports_come_with_what_they_need():
  # Sharding: the mesh and sharding helpers come with shard_population.
  for name in (
    "shard_population",
    "population_mesh",
    "member_sharding",
    "sharded_update",
    "shard_mapped_update",
    "from_process_local",
    "gather_population",
  ):
    assert name in ej.__all__, name
  # TES-SAC comes with the plain schedules and the discrete target ratio.
  for name in (
    "tes_sac_init",
    "tes_sac_update",
    "TesSacState",
    "annealed_discrete_target",
    "linear_schedule",
    "cosine_schedule",
    "exponential_schedule",
    "DISCRETE_TARGET_RATIO",
  ):
    assert name in ej.__all__, name
  # The default optimizer and the usable alpha range are public.
  for name in ("adam", "ALPHA_MIN", "ALPHA_MAX", "LOG_ALPHA_MIN", "LOG_ALPHA_MAX"):
    assert name in ej.__all__, name


def test_public_functions_of_the_public_modules_are_documented():
  for module_name in (*PUBLIC_MODULES, "state", "losses", "update", "targets"):
    module = (
      getattr(ej, module_name) if hasattr(ej, module_name) else __import__(f"entropy_jax.{module_name}", fromlist=["_"])
    )
    assert inspect.getdoc(module), module_name
    for name, obj in vars(module).items():
      if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
        continue
      if inspect.isfunction(obj) or inspect.isclass(obj):
        assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"
