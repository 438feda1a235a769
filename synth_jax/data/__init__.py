"""synth_jax.data."""
