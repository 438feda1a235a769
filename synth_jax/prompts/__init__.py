"""synth_jax.prompts."""
