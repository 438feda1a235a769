"""synth_jax.train."""
