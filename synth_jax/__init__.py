"""synth_jax: synthetic images from text-to-image models, for transfer learning, in JAX/Flax."""
from synth_jax.errors import SynthJaxError

__version__ = "0.1.0"
__all__ = ["SynthJaxError", "__version__"]
