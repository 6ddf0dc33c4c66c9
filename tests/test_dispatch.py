"""The kernel path is chosen at import and can be forced by QUALAM_ISA."""
import os
import subprocess
import sys

import pytest

import qualam_rt


def run_with_isa(value):
    env = dict(os.environ, QUALAM_ISA=value)
    return subprocess.run([sys.executable, "-c", "import qualam_rt; print(qualam_rt.isa())"],
                          env=env, capture_output=True, text=True, cwd="/")


@pytest.mark.parametrize("name", qualam_rt.supported_isas())
def test_environment_variable_forces_a_path(name):
    out = run_with_isa(name)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


def test_default_is_the_best_supported_path():
    out = run_with_isa("")
    assert out.stdout.strip() == qualam_rt.supported_isas()[-1]


def test_unknown_path_in_environment_fails_on_import_with_a_message():
    out = run_with_isa("sse9")
    assert out.returncode != 0
    assert "unknown ISA" in out.stderr
