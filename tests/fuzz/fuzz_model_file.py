"""Fuzzer: the .qrt reader and Engine(path) on mutated model files. Only QualamError (a clear
message) may come out; see harness.py for how to run it."""
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).parent))
from qualam_rt import Engine
from qualam_rt.errors import QualamError
from qualam_rt.model_file import read_model
from harness import tiny_model_path, fuzz  # noqa: E402

SEED = tiny_model_path().read_bytes()
WORK = Path(tempfile.mkdtemp(prefix="qrt_fuzz_file_")) / "m.qrt"


def mutate(data: bytes) -> bytes:
    """Mostly the valid file with the fuzzer's bytes spliced in (at an offset they choose), so
    inputs reach past the header checks; sometimes the raw input."""
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    at = fdp.ConsumeIntInRange(0, len(SEED))
    cut = fdp.ConsumeIntInRange(0, 64)
    patch = fdp.ConsumeBytes(fdp.remaining_bytes())
    return SEED[:at] + patch + SEED[at + cut:]


def TestOneInput(data: bytes) -> None:
    WORK.write_bytes(mutate(data))
    try:
        read_model(WORK)
    except QualamError:
        return
    try:
        engine = Engine(WORK)
        engine.answer("Who wrote it ?", "Ada Lovelace wrote the first program in 1843 .")
    except QualamError:
        pass


if __name__ == "__main__":
    fuzz(TestOneInput)
