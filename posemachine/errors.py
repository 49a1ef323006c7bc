"""The project's error types: each message names the file, field, shape or value at fault."""


class PoseMachineError(ValueError):
  """Base class of posemachine's user-facing errors (bad input, config or workdir)."""


class ConfigError(PoseMachineError):
  """An unknown config key, a value of the wrong type, or an invalid choice."""


class DataError(PoseMachineError):
  """Bad input data: the message names the source, field, sequence, frame or joint."""


class IncompatibleWorkdirError(PoseMachineError):
  """The workdir holds checkpoints of a model that this config cannot restore."""


class NonFiniteError(PoseMachineError, FloatingPointError):
  """A NaN/Inf loss or gradient in training (train.nonfinite='stop'); names step and tensor."""


class CheckpointError(PoseMachineError):
  """No readable checkpoint to resume from, or a checkpoint write failed (e.g. disk full)."""
