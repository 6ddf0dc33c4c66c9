"""`qualam-rt serve`: an HTTP endpoint with dynamic, padding-free batching.

One worker thread owns the Engine. A request's pairs are checked and tokenized into windows
on arrival; the worker takes every waiting request and, under load (its last call packed
several requests) or while more requests are being read or tokenized, waits for others at
most `max_wait_ms`; then it runs the
windows of all of them as one packed native call (up to `max_batch_windows`; a request with
more windows runs alone, in chunks). A lone request is not held back, and under load the
requests that arrive during one call make the next batch. Concurrent
requests therefore share GEMMs instead of each starting its own parallel regions on the
same cores.

    POST /answer        {"question", "context", "top_k"?, "max_answer_len"?} -> Engine.answer's result
    POST /answer_batch  {"pairs": [[q, c], ...], "top_k"?, "max_answer_len"?} -> a list of them
    GET  /health, /info (the model's info), /metrics (Prometheus text format)

Bad requests get a 4xx with {"error": message} (400 malformed JSON or fields, 413 a body over
`max_body_bytes`, 415 not JSON); a full queue gets 503 with Retry-After. A score of -inf (no
span found) is sent as null: JSON has no infinities. FastAPI and uvicorn are an optional
extra: pip install "qualam_rt[serve]".
"""

import asyncio
import json
import math
import queue
import threading
import time
from dataclasses import dataclass

from qualam_rt.engine import Engine
from qualam_rt.errors import InputError

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations
# (Request, imported inside create_app) as objects.
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: about 150 pages of text per request
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WINDOW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class Work:
    """One request's checked pairs, their windows and options."""
    pairs: list
    windows: list
    top_k: int
    max_answer_len: int


@dataclass
class Job:
    """Work waiting for the batcher, and where its result goes."""
    work: Work
    done: asyncio.Future
    loop: asyncio.AbstractEventLoop


def make_work(engine: Engine, pairs, top_k, max_answer_len) -> Work:
    """Checks and tokenizes a request's pairs (HTTPError 400 for bad input)."""
    try:
        pairs = engine.checked_pairs(pairs, top_k, max_answer_len)
        return Work(pairs, engine.windows(pairs), top_k, max_answer_len)
    except InputError as e:
        raise HTTPError(400, str(e)) from None


def answer_work(engine: Engine, items: list[Work], max_windows: int, on_call=None) -> list:
    """The results of several requests from packed native calls of at most `max_windows`
    windows (a request with more runs in chunks); on_call(windows) after each call."""
    windows = [w for item in items for w in item.windows]
    logits = []
    for i in range(0, len(windows), max_windows):
        chunk = windows[i:i + max_windows]
        logits += engine.logits(chunk)
        if on_call:
            on_call(len(chunk))
    results, start = [], 0
    for item in items:
        mine = logits[start:start + len(item.windows)]
        start += len(item.windows)
        results.append(_finite(engine.answers_from(item.pairs, item.windows, mine, item.top_k, item.max_answer_len)))
    return results


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


async def json_body(request, max_body_bytes: int) -> dict:
    """The JSON object a Starlette request carries (HTTPError 415, 413 or 400 otherwise)."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPError(415, f"send JSON (Content-Type: application/json), not {ctype}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise HTTPError(413, f"the body is over {max_body_bytes} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_body_bytes:
            raise HTTPError(413, f"the body is over {max_body_bytes} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"malformed JSON: {e}") from None
    except RecursionError:  # json's decoder recurses per nesting level ([[[[...: a 500 before)
        raise HTTPError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object")
    return body


def request_pairs(route: str, body: dict) -> tuple[list, int, int]:
    """(pairs, top_k, max_answer_len) of an /answer or /answer_batch body (HTTPError 400)."""
    if route == "/answer":
        for key in ("question", "context"):
            if key not in body:
                raise HTTPError(400, f"missing field '{key}'")
        pairs = [(body["question"], body["context"])]
    else:
        if "pairs" not in body:
            raise HTTPError(400, "missing field 'pairs'")
        if not isinstance(body["pairs"], list):
            raise HTTPError(400, "'pairs' must be a list of [question, context] lists")
        pairs = body["pairs"]
    return pairs, body.get("top_k", 1), body.get("max_answer_len", 30)


class Histogram:
    def __init__(self, buckets):
        self.buckets, self.counts, self.total, self.n = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.total += v
        self.n += 1

    def lines(self, name: str, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        out += [f'{name}_bucket{{le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.total}", f"{name}_count {self.n}"]
        return out


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_windows = Histogram(WINDOW_BUCKETS)
        self.started = self.in_flight = 0  # answering requests begun, and not yet answered

    def begin(self) -> None:
        with self.lock:
            self.started += 1
            self.in_flight += 1

    def request(self, path: str, status: int, seconds: float) -> None:
        """An answering request ended (begun with begin())."""
        with self.lock:
            self.in_flight -= 1
            self.requests[path, status] = self.requests.get((path, status), 0) + 1
            if status < 400:
                self.latency.observe(seconds)

    def batch(self, windows: int) -> None:
        with self.lock:
            self.batch_windows.observe(windows)

    def text(self, queue_depth: int) -> str:
        with self.lock:
            lines = ["# HELP qualam_requests_total HTTP requests by path and status.", "# TYPE qualam_requests_total counter"]
            lines += [f'qualam_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())]
            errors = sum(n for (_, s), n in self.requests.items() if s >= 400)
            lines += ["# HELP qualam_errors_total Requests answered with a 4xx or 5xx status.",
                      "# TYPE qualam_errors_total counter", f"qualam_errors_total {errors}"]
            lines += self.latency.lines("qualam_request_seconds", "Time from arrival to answer of successful requests.")
            lines += self.batch_windows.lines("qualam_batch_windows", "Windows per packed native call.")
            lines += ["# HELP qualam_requests_in_flight Answering requests begun and not yet answered.",
                      "# TYPE qualam_requests_in_flight gauge", f"qualam_requests_in_flight {self.in_flight}"]
        lines += ["# HELP qualam_queue_depth Requests waiting for the worker.", "# TYPE qualam_queue_depth gauge",
                  f"qualam_queue_depth {queue_depth}"]
        return "\n".join(lines) + "\n"


class Batcher:
    """The worker thread that owns the engine and packs waiting requests into one call."""

    def __init__(self, engine: Engine, max_batch_windows: int, max_wait_ms: float, max_queue: int, metrics: Metrics):
        self.engine, self.max_windows, self.max_wait = engine, max_batch_windows, max_wait_ms / 1e3
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.metrics = metrics
        self.arriving = 0  # requests accepted by the HTTP layer, not yet queued (read, tokenized)
        self.expected = 1  # requests the last call packed: under steady load, as many come again
        self.arriving_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="qualam-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> bool:
        """False when the queue is full."""
        try:
            self.queue.put_nowait(job)
            return True
        except queue.Full:
            return False

    async def answer(self, work: Work):
        """The result of `work`, once a packed call has run it (HTTPError 503: queue full)."""
        loop = asyncio.get_running_loop()
        job = Job(work, loop.create_future(), loop)
        if not self.submit(job):
            raise HTTPError(503, "the server is busy (queue full); retry shortly", {"Retry-After": "1"})
        return await job.done

    def stop(self) -> None:
        """Finishes every queued job, then ends the worker."""
        self.queue.put(None)
        self.thread.join()

    def arrival(self, delta: int) -> None:
        with self.arriving_lock:
            self.arriving += delta


    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        jobs, windows, stop = [first], len(first.work.windows), False
        deadline = time.perf_counter() + self.max_wait
        while windows < self.max_windows:
            left = deadline - time.perf_counter()
            # Wait for more only while requests are on their way in, or until as many have come
            # as the last call packed (under steady load they come back within a fraction of a
            # millisecond; waiting out max_wait for more than that cost 25% of the throughput
            # at 4 clients). A lone request on an idle server goes at once.
            waiting = left > 0 and (self.arriving > 0 or len(jobs) < self.expected)
            try:
                job = self.queue.get(timeout=left) if waiting else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            jobs.append(job)
            windows += len(job.work.windows)
        return jobs, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self.queue.get()
            if first is None:
                break
            jobs, stop = self._gather(first)
            self.expected = len(jobs)
            try:
                self._answer(jobs)
            except Exception as e:  # an engine bug: every waiting client hears of it, the worker goes on
                for job in jobs:
                    job.loop.call_soon_threadsafe(_settle, job.done, e)

    def _answer(self, jobs: list[Job]) -> None:
        results = answer_work(self.engine, [job.work for job in jobs], self.max_windows, self.metrics.batch)
        for job, result in zip(jobs, results):
            job.loop.call_soon_threadsafe(_settle, job.done, result)


class Arrival:
    """A request on its way to the queue, counted in Batcher.arriving until it leaves()."""

    def __init__(self, batcher: Batcher):
        self.batcher, self.open = batcher, True
        batcher.arrival(+1)

    def leave(self) -> None:
        if self.open:
            self.open = False
            self.batcher.arrival(-1)


def _settle(fut: asyncio.Future, value) -> None:
    if fut.done():  # the client went away
        return
    if isinstance(value, Exception):
        fut.set_exception(value)
    else:
        fut.set_result(value)


def jsonable(value):
    """value with everything JSON cannot hold as its str() (paths, tuples as lists)."""
    return json.loads(json.dumps(value, default=str))


def _finite(result):
    """-inf scores (no span found) as null: JSON has no infinities."""
    if isinstance(result, list):
        return [_finite(r) for r in result]
    return {**result, "score": result["score"] if math.isfinite(result["score"]) else None}


def create_app(engine: Engine, max_batch_windows: int = 32, max_wait_ms: float = 5.0, max_queue: int = 256,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """The FastAPI application serving `engine` (see the module docstring)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    for name, value in (("max_batch_windows", max_batch_windows), ("max_queue", max_queue), ("max_body_bytes", max_body_bytes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not max_wait_ms >= 0:
        raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
    metrics = Metrics()
    state = {}

    @asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher(engine, max_batch_windows, max_wait_ms, max_queue, metrics)
        yield
        await asyncio.get_running_loop().run_in_executor(None, state["batcher"].stop)

    app = FastAPI(title="qualam_rt", lifespan=lifespan)
    app.state.metrics = metrics

    def error(status: int, message: str, headers=None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def internal_error(e: Exception) -> JSONResponse:  # a bug of ours: a message, not a traceback
        return error(500, f"internal error: {type(e).__name__}: {e}")

    def answering(route: str):
        async def endpoint(request: Request):
            t0 = time.perf_counter()
            metrics.begin()
            arrival = Arrival(state["batcher"])  # it leaves once the request's windows are made
            response = None
            try:
                pairs, top_k, max_answer_len = request_pairs(route, await json_body(request, max_body_bytes))
                try:
                    work = make_work(engine, pairs, top_k, max_answer_len)
                finally:
                    arrival.leave()
                result = await state["batcher"].answer(work)
                response = JSONResponse(result[0] if route == "/answer" else result)
            except HTTPError as e:
                response = error(e.status, e.message, e.headers)
            except Exception as e:  # an engine failure: counted like any answer
                response = internal_error(e)
            finally:  # every request begun ends here; one cancelled before its response as 499
                arrival.leave()
                metrics.request(route, 499 if response is None else response.status_code, time.perf_counter() - t0)
            return response
        return endpoint

    app.post("/answer")(answering("/answer"))
    app.post("/answer_batch")(answering("/answer_batch"))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        return jsonable(engine.info())

    @app.get("/metrics")
    async def prometheus():
        batcher = state.get("batcher")
        return PlainTextResponse(metrics.text(batcher.queue.qsize() if batcher else 0),
                                 media_type="text/plain; version=0.0.4")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        return internal_error(exc)

    return app


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8000, access_log: bool = False, **options) -> None:
    """Runs the server until SIGINT/SIGTERM; uvicorn finishes the requests in flight first.
    access_log: a line per request on stderr (off by default: it cost ~0.03 ms of the ~0.1 ms
    HTTP round trip of a request on loopback; /metrics counts requests)."""
    # Checked here: a port past 65535 was taken modulo 2^16 by the resolver while uvicorn's
    # log named the one asked for.
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in [0, 65535], got {port!r}")
    import uvicorn
    uvicorn.run(create_app(engine, **options), host=host, port=port, log_level="info", access_log=access_log)
