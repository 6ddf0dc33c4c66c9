"""The qualam-rt command line."""
import json
import platform

import pytest

from qualam_rt import cli
from qualam_rt import synthetic as syn
from qualam_rt.timing import cpu_model

TEXT = "Ada Lovelace wrote the first program in 1843 . Who wrote it ?"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "m.qrt"
    syn.write_random_model(path, TEXT, frontier=[{"ratios": [0.9, 0.7, 0.5], "macs": 1.0, "f1": 1.0}])
    return str(path)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_answer_from_arguments_file_and_stdin(capsys, model, tmp_path, monkeypatch):
    code, out, _ = run(capsys, "answer", "--model", model, "Who wrote it?", TEXT)
    assert code == 0 and set(json.loads(out)) == {"answer", "score", "start", "end"}
    (tmp_path / "c.txt").write_text(TEXT)
    code, out2, _ = run(capsys, "answer", "--model", model, "Who wrote it?", "--context-file", str(tmp_path / "c.txt"))
    assert code == 0 and json.loads(out2) == json.loads(out)
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"question": "Who wrote it?", "context": TEXT})))
    code, out3, _ = run(capsys, "answer", "--model", model, "-")
    assert code == 0 and json.loads(out3) == json.loads(out)


def test_info_and_bench(capsys, model):
    code, out, _ = run(capsys, "info", model)
    assert code == 0 and json.loads(out)["architecture"]["layers"] == 3
    code, out, _ = run(capsys, "bench", model, "--lengths", "16", "--repeats", "2")
    res = json.loads(out)["results"]
    assert code == 0 and {r["config"] for r in res} == {"full", "frontier 0"}


def test_bench_runs_token_budget_configurations(capsys, tmp_path):
    """A frontier and a default in token budgets (the search's `genes: tokens`): bench took the
    frontier's and the default's keys for keep ratios (KeyError, LengthConfigError)."""
    path = tmp_path / "tokens.qrt"
    syn.write_random_model(path, TEXT, frontier=[{"tokens": [12, 8, 4], "macs": 1.0, "f1": 1.0}],
                           default_config={"tokens": [12, 8, 4]})
    code, out, err = run(capsys, "bench", str(path), "--lengths", "16", "--repeats", "1")
    assert code == 0, err
    res = json.loads(out)["results"]
    assert [r["config"] for r in res] == ["full", "frontier 0", "default"]
    assert res[1]["ratios"] == res[2]["ratios"] == {"tokens": [12, 8, 4]}


def test_eval_reports_em_f1(capsys, model, tmp_path):
    data = {"data": [{"title": "t", "paragraphs": [{"context": TEXT, "qas": [
        {"id": "a", "question": "Who wrote it?", "answers": [{"text": "Ada Lovelace", "answer_start": 0}]},
        {"id": "b", "question": "When?", "answers": [{"text": "1843", "answer_start": TEXT.index("1843")}]}]}]}]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    code, out, _ = run(capsys, "eval", model, str(tmp_path / "d.json"), "--out", str(tmp_path / "r.json"))
    report = json.loads(out)
    assert code == 0 and report["count"] == 2 and 0 <= report["f1"] <= 100
    assert set(json.loads((tmp_path / "r.json").read_text())["predictions"]) == {"a", "b"}
    assert report["cpu"] == cpu_model()


ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma

processor\t: 1
model name\t: another block
"""


def test_cpu_model_tells_apart_cpus_of_one_model_name(tmp_path):
    """Zen 3 and Zen 4 both call themselves "AMD EPYC": the family, model and path features
    (only the first processor's block) are what tells the reports apart."""
    zen3, zen4, bare = tmp_path / "zen3", tmp_path / "zen4", tmp_path / "bare"
    zen3.write_text(ZEN3)
    zen4.write_text(ZEN3.replace("model\t\t: 1", "model\t\t: 17").replace("fma", "fma avx512_vnni avx512_bf16"))
    bare.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: sse2\n")
    assert cpu_model(str(zen3)) == "AMD EPYC (family 25, model 1; avx2)"
    assert cpu_model(str(zen4)) == "AMD EPYC (family 25, model 17; avx2 avx512_vnni avx512_bf16)"
    assert cpu_model(str(bare)) == "Some CPU"  # no family line: the name alone
    assert cpu_model(str(tmp_path / "missing")) == (platform.processor() or "unknown")


def test_errors_exit_with_a_message(capsys, model, tmp_path):
    code, _, err = run(capsys, "answer", "--model", str(tmp_path / "none.qrt"), "q", "c")
    assert code == 2 and "not found" in err
    code, _, err = run(capsys, "answer", "--model", model, "", TEXT)
    assert code == 2 and "question is empty" in err


@pytest.mark.parametrize("blob, message", [
    ([], "its top level must be an object holding 'data', not list"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),  # written as it is (json.dumps would nest it)
    ({"data": 5}, "'data' must be a list of articles, not int"),
    ({"version": "1.1"}, "no 'data' where one is expected"),
    ({"data": [{"paragraphs": [{"context": TEXT, "qas": [{"question": "Who?", "answers": []}]}]}]},
     "no 'id' where one is expected"),
    ({"data": [{"paragraphs": [{"context": 5, "qas": [{"id": "x", "question": "Who?", "answers": []}]}]}]},
     "question 'x': its question and context must be strings"),
    ({"data": [{"paragraphs": [{"context": TEXT, "qas": [{"id": "x", "question": "Who?", "answers": [7]}]}]}]},
     "not a SQuAD v1.1 json file"),
    ({"data": [{"paragraphs": [{"context": TEXT, "qas": [{"id": "x", "question": "Who?", "answers": []}]}]}]},
     "1 question(s) of"),  # SQuAD v2's unanswerable questions: refused before the model runs
])
def test_eval_of_a_file_not_in_squad_v1_form_says_what_is_wrong(capsys, model, tmp_path, blob, message):
    """Such files ended in a TypeError or AttributeError traceback, or after the whole run in
    "max() arg is an empty sequence"."""
    (tmp_path / "d.json").write_text(blob if isinstance(blob, str) else json.dumps(blob))
    code, out, err = run(capsys, "eval", model, str(tmp_path / "d.json"))
    assert code == 2 and out == "" and err.startswith("qualam-rt: error: ") and message in err, err


def test_answer_from_stdin_needs_a_json_object(capsys, model, monkeypatch):
    import io
    for text, message in (("[1, 2]", "stdin must hold a JSON object"), ("[" * 5000 + "]" * 5000, "nested too deeply")):
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        code, out, err = run(capsys, "answer", "--model", model, "-")
        assert code == 2 and message in err, err


@pytest.mark.parametrize("argv, message", [
    (("bench", "--batch", "0"), "argument --batch: must be at least 1, got 0"),  # ZeroDivisionError before
    (("bench", "--lengths", "-5"), "argument --lengths: must be at least 1, got -5"),
    (("bench", "--repeats", "x"), "argument --repeats: invalid int value: 'x'"),
    (("eval", "m.qrt", "d.json", "--limit", "-5"), "argument --limit: must be at least 0"),  # dropped 5 before
    (("eval", "m.qrt", "d.json", "--batch", "0"), "argument --batch: must be at least 1"),
])
def test_counts_on_the_command_line_are_checked(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_token_budgets_and_value_errors_reach_the_user_as_messages(capsys, model):
    code, out, _ = run(capsys, "answer", "--model", model, "--length-config", "tokens:9,5,2", "Who wrote it?", TEXT)
    assert code == 0 and set(json.loads(out)) == {"answer", "score", "start", "end"}
    code, out, _ = run(capsys, "info", model, "--length-config", "tokens:9,5,2")
    assert json.loads(out)["length_config"] == {"tokens": [9, 5, 2]}
    for argv, message in ((("--length-config", "tokens:9,x,2"), "--length-config"),
                          (("--length-config", "tokens:9,10,2"), "non-increasing"),
                          (("--threads", "0"), "threads must be an integer in [1, ")):
        code, out, err = run(capsys, "answer", "--model", model, *argv, "Who wrote it?", TEXT)
        assert code == 2 and out == "" and err.startswith("qualam-rt: error: ") and message in err, err
        assert "Traceback" not in err
