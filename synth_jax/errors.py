"""The one exception family users see: every message names the bad value and the fix."""


class SynthJaxError(Exception):
  """Base class. The CLI prints `error: <message>` and exits 2, no traceback unless --verbose."""


class ConfigError(SynthJaxError):
  """A config file, key, type or value is wrong."""


class WeightsError(SynthJaxError):
  """A weights file or folder is missing, unsafe, or does not match the model."""


class DataError(SynthJaxError):
  """A dataset, folder, class name or record is missing or unreadable."""


class IntegrityError(DataError):
  """A file on disk does not match the size/hash recorded when it was written."""


class RunDirError(SynthJaxError):
  """The run directory is locked by a live process, read-only, or holds an incompatible run."""


class TrainingError(SynthJaxError):
  """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class MeshError(ConfigError):
  """The requested mesh does not fit the devices, or a batch does not divide it."""


class LLMError(SynthJaxError):
  """An LLM backend is unreachable or keeps returning unusable output."""
