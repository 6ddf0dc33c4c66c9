"""qualam-rt serve through a real uvicorn on a loopback port: answers as Engine.answer gives
them, every bad request its 4xx, an overloaded queue 503 and the server still answering."""
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from qualam_rt import Engine  # noqa: E402
from qualam_rt import synthetic as syn  # noqa: E402
from qualam_rt.serve import create_app  # noqa: E402

TEXT, QUESTIONS = syn.SAMPLE_CONTEXT, syn.SAMPLE_QUESTIONS


class Server:
    """uvicorn on a free loopback port, in a thread; stop() is uvicorn's graceful shutdown."""

    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "m.qrt"
    syn.write_sample_model(path)
    return Engine(path)


@pytest.fixture(scope="module")
def server(engine):
    s = Server(create_app(engine, max_batch_windows=8, max_wait_ms=20, max_body_bytes=4096))
    yield s
    s.stop()


def test_concurrent_clients_get_engine_answers(server, engine):
    jobs = [(q, TEXT, k) for q in QUESTIONS for k in (1, 3)] * 4

    def ask(job):
        q, c, k = job
        r = httpx.post(server.url + "/answer", json={"question": q, "context": c, "top_k": k}, timeout=30)
        return r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, jobs))
    for (q, c, k), (status, body) in zip(jobs, results):
        assert status == 200
        assert body == json.loads(json.dumps(engine.answer(q, c, top_k=k)))
    r = httpx.post(server.url + "/answer_batch", json={"pairs": [[q, TEXT] for q in QUESTIONS]}, timeout=30)
    assert r.status_code == 200 and r.json() == json.loads(json.dumps(engine.answer_batch([(q, TEXT) for q in QUESTIONS])))
    metrics = httpx.get(server.url + "/metrics").text
    assert 'qualam_requests_total{path="/answer",status="200"}' in metrics
    batched = [line for line in metrics.splitlines() if line.startswith("qualam_batch_windows_count")]
    calls = int(batched[0].split()[-1])
    assert calls < len(jobs), "concurrent requests should share packed calls"


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"question": "Who?"}', 400, "missing field 'context'"),
    (b'{"question": "", "context": "text"}', 400, "question is empty"),
    (b'{"question": 5, "context": "text"}', 400, "question must be a str"),
    (b'{"question": "Who?", "context": "text", "top_k": 0}', 400, "top_k"),
    (b'{"question": "Who?", "context": "text", "top_k": "3"}', 400, "top_k"),
    (b'{"question": "Who?", "context": "text", "max_answer_len": true}', 400, "max_answer_len"),
    (b'{"question": "Who?", "context": "' + b"x " * 3000 + b'"}', 413, "over 4096 bytes"),
    (b"[" * 2000 + b"]" * 2000, 400, "nested too deeply"),  # json's RecursionError: a 500 before
])
def test_bad_answer_requests_get_their_status(server, body, status, message):
    r = httpx.post(server.url + "/answer", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["error"]


def test_bad_batch_requests_and_content_types(server):
    for body, message in ((b'{"pairs": "abc"}', "'pairs' must be a list"), (b'{"pairs": [["q"]]}', "each pair"),
                          (b'{"nothing": 1}', "missing field 'pairs'"), (b'{"pairs": [["q", 3]]}', "context must be a str")):
        r = httpx.post(server.url + "/answer_batch", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and message in r.json()["error"]
    r = httpx.post(server.url + "/answer", content=b"question=a", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/info").json()["architecture"]["layers"] == 3
    assert httpx.get(server.url + "/answer").status_code == 405
    metrics = httpx.get(server.url + "/metrics").text
    assert "qualam_errors_total" in metrics and "qualam_queue_depth" in metrics


def test_overload_gets_503_and_the_server_keeps_answering(engine):
    s = Server(create_app(engine, max_batch_windows=1, max_wait_ms=0, max_queue=1))
    try:
        long_text = " ".join([TEXT] * 40)  # many windows: the worker stays busy

        def ask(_):
            r = httpx.post(s.url + "/answer", json={"question": QUESTIONS[0], "context": long_text}, timeout=60)
            return r.status_code, r.headers.get("retry-after")

        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(ask, range(48)))
        statuses = [st for st, _ in results]
        assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
        assert all(ra == "1" for st, ra in results if st == 503)
        r = httpx.post(s.url + "/answer", json={"question": QUESTIONS[0], "context": TEXT}, timeout=30)
        assert r.status_code == 200 and r.json() == json.loads(json.dumps(engine.answer(QUESTIONS[0], TEXT)))
    finally:
        s.stop()


def test_shutdown_finishes_the_requests_in_flight(engine):
    s = Server(create_app(engine, max_batch_windows=4, max_wait_ms=50))
    long_text = " ".join([TEXT] * 20)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.post, s.url + "/answer", json={"question": q, "context": long_text}, timeout=60)
                   for q in QUESTIONS]
        deadline = time.time() + 60
        while s.server.config.app.state.metrics.started < len(QUESTIONS):  # every request is in
            assert time.time() < deadline, "the requests did not reach the server"
            time.sleep(0.01)
        s.stop()
        assert [f.result().status_code for f in futures] == [200] * len(QUESTIONS)


def test_bad_server_options_raise(engine):
    for kwargs in ({"max_batch_windows": 0}, {"max_queue": -1}, {"max_wait_ms": -1.0}):
        with pytest.raises(ValueError):
            create_app(engine, **kwargs)


def test_a_port_outside_the_tcp_range_is_refused_before_serving(engine):
    """Port 99999 was taken modulo 2^16 by the resolver (the server listened on 34463) while
    uvicorn's log said 99999."""
    from qualam_rt.serve import serve
    for port in (-1, 65536, 99999, True, "8000"):
        with pytest.raises(ValueError, match=r"port must be an integer in \[0, 65535\]"):
            serve(engine, port=port)


def test_an_engine_failure_is_a_500_that_the_metrics_count(tmp_path):
    """An exception from the engine (a model whose tokenizer fails on some input, say) reached
    the app's handler as a 500 without passing the request's metrics: the in-flight gauge kept
    it forever and the error counter missed it."""
    path = tmp_path / "m.qrt"
    syn.write_sample_model(path)
    broken = Engine(path)

    def fail(*args, **kwargs):
        raise RuntimeError("the engine broke")
    broken.logits = fail
    s = Server(create_app(broken, max_wait_ms=0))
    try:
        for _ in range(3):
            r = httpx.post(s.url + "/answer", json={"question": QUESTIONS[0], "context": TEXT}, timeout=30)
            assert r.status_code == 500 and "RuntimeError: the engine broke" in r.json()["error"]
        metrics = httpx.get(s.url + "/metrics").text
        assert "qualam_requests_in_flight 0" in metrics
        assert 'qualam_requests_total{path="/answer",status="500"} 3' in metrics
        assert "qualam_errors_total 3" in metrics
    finally:
        s.stop()
