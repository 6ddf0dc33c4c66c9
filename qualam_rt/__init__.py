"""qualam_rt: length-adaptive INT8 extractive question answering on CPUs."""
try:
    from qualam_rt._C import isa, num_threads, set_isa, set_num_threads, supported_isas  # noqa: F401
except ImportError as e:  # most often: importing the source tree, where nothing is built
    raise ImportError(f"qualam_rt's native extension is missing ({e}); install with `pip install .`, "
                      "or `pip install -e .` to work from the repository root") from e
from qualam_rt import cpus  # noqa: E402
set_num_threads(cpus.default_thread_count(num_threads(), quota=cpus.cgroup_cpu_quota()))  # a cgroup CPU quota
from qualam_rt.engine import Engine  # noqa: F401,E402
from qualam_rt.errors import (FormatVersionError, InputError, LengthConfigError, ModelFileError,  # noqa: F401
                              ModelNotFoundError, QualamError)
