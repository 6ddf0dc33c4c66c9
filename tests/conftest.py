import pytest

from qualam_rt import _C


@pytest.fixture(params=_C.supported_isas())
def isa(request):
    """Runs the test once per kernel path this CPU supports, then restores the default."""
    before = _C.isa()
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(before)
