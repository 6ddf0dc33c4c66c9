"""A short run of each fuzzer (tests/fuzz/, atheris): 1,500 inputs each. A finding fails the
test with the fuzzer's output; long runs are documented in tests/fuzz/harness.py."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")
FUZZ = Path(__file__).parent / "fuzz"


@pytest.mark.parametrize("name", ["model_file", "wordpiece", "encoder", "engine"])
def test_fuzzer_short_run_finds_nothing(name, tmp_path):
    run = subprocess.run([sys.executable, str(FUZZ / f"fuzz_{name}.py"), "-runs=1500", "-max_len=4096", "-len_control=0",
                          f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "Done 1500 runs" in out
