"""qualam_rt: length-adaptive INT8 extractive question answering on CPUs."""
from qualam_rt._C import isa, num_threads, set_isa, set_num_threads, supported_isas  # noqa: F401
from qualam_rt.engine import Engine  # noqa: F401
from qualam_rt.errors import (FormatVersionError, InputError, LengthConfigError, ModelFileError,  # noqa: F401
                              ModelNotFoundError, QualamError)
