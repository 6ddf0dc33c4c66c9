"""What the fuzzers share: a tiny valid model (the seed the .qrt fuzzer mutates) and the
exceptions a bad input may raise. Run a fuzzer for 1e5 inputs:

    python tests/fuzz/fuzz_model_file.py -runs=100000
    python tests/fuzz/fuzz_wordpiece.py -runs=100000
    python tests/fuzz/fuzz_encoder.py -runs=100000
    python tests/fuzz/fuzz_engine.py -runs=100000

(libFuzzer flags: -runs=N inputs, -max_total_time=S seconds, a corpus folder as argument).
Coverage guides them through the Python code (atheris instruments it); the native code is
exercised by what that coverage reaches, and is checked separately under ASan/UBSan
(tools/sanitize.sh). Any other exception, or a crash of the process, is a finding: it becomes
a regression test.
"""
import tempfile
from pathlib import Path

TEXT = ("Ada Lovelace wrote the first program in 1843 . Charles Babbage designed the analytical engine ; "
        "the café owner in Zürich was naïve about it . Who wrote it ? [SEP] 42 % , ( ) ' -")
CONFIG = dict(hidden=32, heads=2, intermediate=48, layers=2, vocab_size=0, max_position=128, type_vocab_size=2)


def tiny_model_path(max_position: int = CONFIG["max_position"]) -> Path:
    """A valid random-weight .qrt file in a temporary folder (kept for the process's life)."""
    from qualam_rt import synthetic as syn
    folder = Path(tempfile.mkdtemp(prefix="qrt_fuzz_"))
    path = folder / "tiny.qrt"
    syn.write_random_model(path, TEXT, config=CONFIG | {"max_position": max_position},
                           frontier=[{"ratios": [0.9, 0.5], "macs": 1.0, "f1": 1.0}], default_config=[0.9, 0.5])
    return path


def fuzz(test_one_input) -> None:
    """Runs a fuzzer's TestOneInput under atheris with the command line's libFuzzer flags.
    qualam_rt may be installed editable (a custom import loader), which
    atheris.instrument_imports misses: every loaded function is instrumented instead."""
    import sys

    import atheris
    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
