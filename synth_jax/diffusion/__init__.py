"""synth_jax.diffusion."""
