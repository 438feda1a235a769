"""synth_jax.models."""
