"""The bundled default model loads with Engine() and answers the README's examples."""
import pytest

import qualam_rt
from qualam_rt.engine import default_model_path

pytestmark = pytest.mark.skipif(not default_model_path().is_file(), reason="no bundled model in this build")


@pytest.fixture(scope="module")
def engine():
    return qualam_rt.Engine()


@pytest.mark.parametrize("question, context, answer", [
    ("Who wrote the report?", "The report was written by Ada Lovelace in 1843.", "Ada Lovelace"),
    ("When was the report written?", "The report was written by Ada Lovelace in 1843.", "1843"),
    ("In what country is Normandy located?",
     "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France.",
     "France"),
])
def test_readme_examples(engine, question, context, answer):
    assert engine.answer(question, context)["answer"] == answer


def test_default_model_metadata(engine):
    info = engine.info()
    assert info["architecture"]["layers"] == 6 and info["architecture"]["hidden"] == 384
    assert info["frontier"] and info["provenance"]["base_checkpoint"].startswith("sentence-transformers/all-MiniLM-L6-v2")
