import pytest

from qualam_rt import _C


@pytest.fixture(params=_C.supported_isas())
def isa(request):
    """Runs the test once per kernel path this CPU supports, then restores the default."""
    before = _C.isa()
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(before)


def pytest_report_header(config):
    """Which kernel paths the `isa` fixture runs here: a CPU without AVX-512 (or AMX) runs
    fewer, and the header says so instead of skipping them silently."""
    from qualam_rt import _C
    return [f"qualam_rt kernel paths tested: {', '.join(_C.supported_isas())} (default {_C.isa()}; amx: {_C.amx_status()})"]


@pytest.fixture
def set_threads():
    """set_threads(n) sets the process-wide kernel thread count; the count before the test is
    restored after it, whatever happens."""
    before = _C.num_threads()
    yield _C.set_num_threads
    _C.set_num_threads(before)
