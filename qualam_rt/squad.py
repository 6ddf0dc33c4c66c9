"""SQuAD v1.1: the json format and the official EM/F1 metric."""
from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from qualam_rt.errors import InputError


@dataclass
class Example:
    id: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)
    answer_starts: list[int] = field(default_factory=list)
    title: str = ""


def load_examples(path: str | Path, articles: slice | None = None) -> list[Example]:
    """Examples of a SQuAD v1.1 json file, optionally of a slice of its articles; InputError for
    a file of another shape (the json's own errors are ValueErrors)."""
    try:
        blob = json.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError:  # json's decoder recurses per nesting level
        raise InputError(f"{path} is not a SQuAD v1.1 json file: nested too deeply") from None
    out = []
    try:
        if not isinstance(blob, dict):
            raise TypeError(f"its top level must be an object holding 'data', not {type(blob).__name__}")
        data = blob["data"]
        if not isinstance(data, list):
            raise TypeError(f"'data' must be a list of articles, not {type(data).__name__}")
        for article in data if articles is None else data[articles]:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    if not all(isinstance(x, str) for x in (qa["question"], para["context"])):
                        raise TypeError(f"question {qa.get('id')!r}: its question and context must be strings")
                    out.append(Example(qa["id"], qa["question"], para["context"],
                                       [a["text"] for a in qa["answers"]],
                                       [a["answer_start"] for a in qa["answers"]], article.get("title", "")))
    except KeyError as e:
        raise InputError(f"{path} is not a SQuAD v1.1 json file: no {e} where one is expected") from None
    except (TypeError, AttributeError) as e:
        raise InputError(f"{path} is not a SQuAD v1.1 json file: {e}") from None
    return out


def normalize_answer(s: str) -> str:
    """Lower case, strip punctuation, articles and extra whitespace (official v1.1 script)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def question_scores(examples: list[Example], predictions: dict[str, str]) -> tuple[list[float], list[float]]:
    """Each question's EM and F1 (0 to 1), each the max over its reference answers: paired
    comparisons of two systems on the same questions need them one by one."""
    em, f1 = [], []
    for ex in examples:
        pred = predictions.get(ex.id, "")
        em.append(max(exact_match(pred, a) for a in ex.answers))
        f1.append(max(f1_score(pred, a) for a in ex.answers))
    return em, f1


def summarize(em: list[float], f1: list[float]) -> dict[str, float]:
    """EM and F1 in percent over the questions `question_scores` scored."""
    n = max(len(f1), 1)
    return {"exact_match": 100.0 * sum(em) / n, "f1": 100.0 * sum(f1) / n, "count": len(f1)}


def evaluate(examples: list[Example], predictions: dict[str, str]) -> dict[str, float]:
    """EM and F1 in percent, each the max over an example's reference answers."""
    return summarize(*question_scores(examples, predictions))
