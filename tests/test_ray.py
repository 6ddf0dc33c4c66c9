"""Ray Serve and Ray Data on a real local Ray runtime (2 CPUs): the answers Engine.answer gives,
bad input answered with its message, SQuAD evaluation through Ray Data equal to the plain one."""
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install '.[ray]'")
httpx = pytest.importorskip("httpx")

from qualam_rt import Engine, cli  # noqa: E402
from qualam_rt import synthetic as syn  # noqa: E402

TEXT, QUESTIONS = syn.SAMPLE_CONTEXT, syn.SAMPLE_QUESTIONS


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray") / "m.qrt"
    syn.write_sample_model(path)
    return str(path)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    # Ray puts the driver's working directory on its workers' import path: from a source
    # checkout beside a non-editable install (as CI runs) the workers would import the sources,
    # which have no built extension. Start Ray from an empty folder instead.
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray_cwd"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False,
                 configure_logging=False)
    except Exception as e:  # noqa: BLE001  (no shared memory, no ports...: say why)
        pytest.skip(f"a local Ray runtime cannot start here: {type(e).__name__}: {e}")
    finally:
        os.chdir(here)
    yield
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_data_answers_as_the_engine_does(runtime, model):
    from qualam_rt.ray import answer_dataset
    engine = Engine(model)
    rows = [{"question": q, "context": TEXT} for q in QUESTIONS * 5] + [{"question": "", "context": TEXT}]
    out = answer_dataset(rows, model, workers=2, threads=1, batch_size=4)
    assert [r["question"] for r in out] == [r["question"] for r in rows]  # the rows' order
    for row, r in zip(rows[:-1], out[:-1]):
        expected = engine.answer(row["question"], row["context"])
        assert r["error"] == "" and {k: r[k] for k in expected} == expected
    assert "question is empty" in out[-1]["error"] and out[-1]["answer"] == "" and out[-1]["start"] == -1


def test_eval_through_ray_data_scores_as_the_plain_eval(runtime, model, tmp_path, capsys):
    qas = [{"id": str(i), "question": q, "answers": [{"text": "Ada Lovelace", "answer_start": 0}]}
           for i, q in enumerate(QUESTIONS * 3)]
    (tmp_path / "d.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": TEXT, "qas": qas}]}]}))
    reports = []
    for extra in ([], ["--ray", "2", "--threads", "1"]):
        out = tmp_path / f"r{len(reports)}.json"
        assert cli.main(["eval", model, str(tmp_path / "d.json"), "--batch", "5", "--out", str(out)] + extra) == 0
        reports.append(json.loads(out.read_text()))
    capsys.readouterr()
    assert reports[1]["predictions"] == reports[0]["predictions"]
    assert reports[1]["report"]["f1"] == reports[0]["report"]["f1"] and reports[1]["report"]["ray_workers"] == 2


def test_ray_serve_answers_as_the_engine_does(runtime, model):
    from ray import serve

    from qualam_rt.ray import app
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(app({"model": model, "threads": "1", "max_batch_windows": "8", "max_wait_ms": "20"}),
                  name="qa", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        engine = Engine(model)
        jobs = [(q, k) for q in QUESTIONS for k in (1, 3)] * 3

        def ask(job):
            r = httpx.post(url + "/answer", json={"question": job[0], "context": TEXT, "top_k": job[1]}, timeout=60)
            return r.status_code, r.json()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(ask, jobs))
        for (q, k), (status, body) in zip(jobs, results):
            assert status == 200 and body == json.loads(json.dumps(engine.answer(q, TEXT, top_k=k)))
        r = httpx.post(url + "/answer_batch", json={"pairs": [[q, TEXT] for q in QUESTIONS]}, timeout=60)
        assert r.status_code == 200
        assert r.json() == json.loads(json.dumps(engine.answer_batch([(q, TEXT) for q in QUESTIONS])))
        assert httpx.get(url + "/health", timeout=30).json() == {"status": "ok"}
        assert httpx.get(url + "/info", timeout=30).json()["architecture"]["layers"] == 3
        for body, status, message in (({"question": "q"}, 400, "missing field 'context'"),
                                      ({"question": "", "context": TEXT}, 400, "question is empty"),
                                      ({"question": 5, "context": TEXT}, 400, "str"),
                                      ({"pairs": "x"}, 400, "must be a list")):
            route = "/answer_batch" if "pairs" in body else "/answer"
            r = httpx.post(url + route, json=body, timeout=30)
            assert r.status_code == status and message in r.json()["error"], (body, r.text)
        r = httpx.post(url + "/answer", content=b"{not json", headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
        r = httpx.post(url + "/answer", content=b"[" * 5000 + b"]" * 5000, headers={"content-type": "application/json"},
                       timeout=30)  # json's RecursionError: Ray Serve's 500 before
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
        assert httpx.get(url + "/nothing", timeout=30).status_code == 404
        assert ask(jobs[0])[0] == 200  # still answering
    finally:
        serve.shutdown()


def test_app_rejects_unknown_arguments():
    from qualam_rt.ray import app
    with pytest.raises(ValueError, match="unknown arguments"):
        app({"modle": "x.qrt"})
