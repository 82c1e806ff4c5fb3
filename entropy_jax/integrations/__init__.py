"""entropy_jax driving the temperature of third-party JAX SAC agents.

* `entropy_jax.integrations.rejax`: rejax's `SAC` (`EntropySAC`), and the
  gymnax step adapter rejax 0.1.3 needs with gymnax 1.0.
* `entropy_jax.integrations.sbx`: SBX's `SAC`, `TQC` and `CrossQ`.

Each subclasses the client's agent and replaces the one method that steps
its temperature; the client's training loop, networks, losses and replay
buffer are untouched. They need the clients, installed by
`pip install 'entropy_jax[integrations]'`; this package imports neither.
"""
