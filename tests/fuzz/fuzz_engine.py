"""Fuzzer: Engine.answer / answer_batch on arbitrary strings and arguments: an answer whose
offsets lie inside the context and match its text, or a QualamError other than
ModelFileError (the models are valid); nothing else. See harness.py for how to run it."""
import sys
from pathlib import Path

import atheris
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from qualam_rt import Engine
from qualam_rt.errors import ModelFileError, QualamError
from harness import TEXT, tiny_model_path, fuzz  # noqa: E402

# Windows of 128 tokens, and of 24: there a long question must be cut to leave the context
# more tokens than the stride.
ENGINES = [Engine(tiny_model_path()), Engine(tiny_model_path(max_position=24))]


def value(fdp):
    """A str most of the time, else something a caller might pass by mistake."""
    choice = fdp.ConsumeIntInRange(0, 9)
    if choice <= 5:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 600))
    if choice == 6:
        words = TEXT.split()
        return " ".join(words[fdp.ConsumeIntInRange(0, len(words) - 1)] for _ in range(fdp.ConsumeIntInRange(0, 300)))
    return [None, 7, b"bytes", 3.5][choice - 6]


def count(fdp, usual: int):
    """A count argument: the usual one, a small one, a numpy integer, or one past any native int."""
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:
        return usual
    if choice == 1:
        return fdp.ConsumeIntInRange(-1, 40)
    if choice == 2:
        return np.int64(fdp.ConsumeIntInRange(-1, 40))
    return fdp.PickValueInList([2**31, 2**63, 10**30, -2**63])


def check(result, context):
    for r in result if isinstance(result, list) else [result]:
        assert 0 <= r["start"] <= r["end"] <= len(context) and context[r["start"]:r["end"]] == r["answer"]


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    engine = ENGINES[fdp.ConsumeIntInRange(0, len(ENGINES) - 1)]
    question, context = value(fdp), value(fdp)
    top_k, max_len = count(fdp, 1), count(fdp, 30)
    try:
        if fdp.ConsumeBool():
            check(engine.answer(question, context, top_k=top_k, max_answer_len=max_len), context)
        else:
            pairs = [(question, context)] * fdp.ConsumeIntInRange(0, 3)
            for r in engine.answer_batch(pairs, batch_size=count(fdp, 32), top_k=top_k,
                                         max_answer_len=max_len):
                check(r, context)
    except ModelFileError:
        raise  # the models are valid: a failure there (its tokenizer's, say) is a finding
    except QualamError:
        pass


if __name__ == "__main__":
    fuzz(TestOneInput)
