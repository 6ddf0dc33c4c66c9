"""Exceptions of qualam_rt: each says what went wrong and what to do."""


class QualamError(Exception):
    """Base class of every qualam_rt error."""


class ModelNotFoundError(QualamError, FileNotFoundError):
    """The model file does not exist."""


class ModelFileError(QualamError, ValueError):
    """The file is not a valid .qrt model (not safetensors, truncated, corrupted, inconsistent)."""


class FormatVersionError(ModelFileError):
    """The .qrt file was written by an incompatible version of qualam_rt."""


class InputError(QualamError, ValueError):
    """A question or context that cannot be answered (empty, not a string, ...)."""


class LengthConfigError(QualamError, ValueError):
    """An invalid length configuration (keep ratios)."""
