"""entropy_jax driving the temperature of third-party JAX SAC agents.

`rejax_sac` (rejax 0.1.3) and `sbx_sac` (sbx-rl 0.28.0) each subclass the
client's SAC and override the one method that updates its temperature; see
docs/integrations.md. Install with `pip install -e '.[integrations]'`.
"""
