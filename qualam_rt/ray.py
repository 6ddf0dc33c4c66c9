"""Ray, for more than one process or machine: a Ray Serve deployment for online traffic and a
Ray Data callable class for batch inference, both around Engine. pip install "qualam_rt[ray]".

Online: each replica owns one Engine and packs concurrent requests into one native call with
Ray's @serve.batch (counted in windows, as `qualam-rt serve` does); Ray's proxy spreads the
requests over the replicas, on one machine or a cluster. The HTTP interface is that of
`qualam-rt serve` (POST /answer, POST /answer_batch, GET /health, GET /info):

    serve run qualam_rt.ray:app model=m.qrt threads=2 num_replicas=2 max_batch_windows=32 max_wait_ms=5

Batch: a dataset of rows with "question" and "context" columns gains "answer", "score",
"start", "end" and "error" (a row with bad input gets its message there; the others are answered):

    ds.map_batches(Answerer, fn_constructor_kwargs={"model": "m.qrt", "threads": 1},
                   concurrency=2, num_cpus=1, batch_size=64)
    qualam-rt eval m.qrt dev-v1.1.json --ray 2          # SQuAD EM/F1 through Ray Data

Ray puts the driver's working directory on its workers' import path: start it outside a source
checkout of qualam_rt whose extension is not built in place (a non-editable install).
"""
from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from qualam_rt.engine import Engine
from qualam_rt.errors import InputError
from qualam_rt.serve import (DEFAULT_MAX_BODY_BYTES, HTTPError, Work, answer_work, json_body, jsonable, make_work,
                             request_pairs)


class Answerer:
    """A Ray Data callable class: answers a batch of {"question", "context"} columns."""

    def __init__(self, model=None, threads: int | None = None, length_config="default", attention=None,
                 max_answer_len: int = 30):
        self.engine = Engine(model, threads=threads, length_config=length_config, attention=attention)
        self.max_answer_len = max_answer_len

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pairs = list(zip(batch["question"], batch["context"]))
        errors = [""] * len(pairs)
        good, checked = [], []
        for i, pair in enumerate(pairs):
            try:
                checked += self.engine.checked_pairs([pair], 1, self.max_answer_len)
                good.append(i)
            except InputError as e:
                errors[i] = str(e)
        results = [{"answer": "", "score": float("nan"), "start": -1, "end": -1}] * len(pairs)
        answered = self.engine._answer_checked(checked, 32, 1, self.max_answer_len)  # checked once, above
        for i, r in zip(good, answered):
            results[i] = r
        out = dict(batch)
        out["answer"] = np.array([r["answer"] for r in results], dtype=object)
        for key, dtype in (("score", np.float64), ("start", np.int64), ("end", np.int64)):
            out[key] = np.array([r[key] for r in results], dtype=dtype)
        out["error"] = np.array(errors, dtype=object)
        return out


def _windows(items: list[tuple[Work, int]]) -> int:
    """A batch's size in windows; a request larger than the cap counts as the cap (it runs alone)."""
    return sum(min(len(work.windows), cap) for work, cap in items)


@serve.deployment
class QAServer:
    """One replica: an Engine behind the HTTP interface of `qualam-rt serve`."""

    def __init__(self, model=None, threads: int | None = None, length_config="default",
                 max_batch_windows: int = 32, max_wait_ms: float = 5.0, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.engine = Engine(model, threads=threads, length_config=length_config)
        self.max_windows, self.max_body_bytes = max_batch_windows, max_body_bytes
        self.answer_many.set_max_batch_size(max_batch_windows)
        self.answer_many.set_batch_wait_timeout_s(max_wait_ms / 1e3)

    @serve.batch(batch_size_fn=_windows)
    async def answer_many(self, items: list[tuple[Work, int]]) -> list:
        # In a thread: the replica's event loop keeps reading requests for the next batch.
        return await asyncio.get_running_loop().run_in_executor(
            None, answer_work, self.engine, [work for work, _ in items], self.max_windows)

    async def __call__(self, request):
        from starlette.responses import JSONResponse
        route = "/" + request.url.path.strip("/").rsplit("/", 1)[-1]
        try:
            if request.method == "GET" and route == "/health":
                return JSONResponse({"status": "ok"})
            if request.method == "GET" and route == "/info":
                return JSONResponse(jsonable(self.engine.info()))
            if request.method != "POST" or route not in ("/answer", "/answer_batch"):
                raise HTTPError(404, f"no route {request.method} {request.url.path}")
            pairs, top_k, max_answer_len = request_pairs(route, await json_body(request, self.max_body_bytes))
            result = await self.answer_many((make_work(self.engine, pairs, top_k, max_answer_len), self.max_windows))
            return JSONResponse(result[0] if route == "/answer" else result)
        except HTTPError as e:
            return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)


def app(args: dict) -> serve.Application:
    """The application `serve run qualam_rt.ray:app key=value ...` starts. Keys: model,
    threads (per replica), length_config, num_replicas, max_batch_windows, max_wait_ms,
    max_queued_requests (beyond it Ray answers 503)."""
    known = {"model", "threads", "length_config", "num_replicas", "max_batch_windows", "max_wait_ms",
             "max_queued_requests"}
    unknown = set(args) - known
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)}; known: {sorted(known)}")
    threads = int(args["threads"]) if args.get("threads") else None
    options = {"num_replicas": int(args.get("num_replicas", 1)),
               "max_queued_requests": int(args.get("max_queued_requests", 256)),
               "ray_actor_options": {"num_cpus": threads or 1}}
    return QAServer.options(**options).bind(
        args.get("model"), threads, args.get("length_config", "default"),
        int(args.get("max_batch_windows", 32)), float(args.get("max_wait_ms", 5.0)))


def answer_dataset(rows: list[dict], model=None, workers: int = 1, threads: int = 1, batch_size: int = 64,
                   length_config="default", attention=None) -> list[dict]:
    """Answers rows with "question" and "context" through Ray Data with `workers` Answerer
    actors of `threads` threads each, in the rows' order (Ray starts a local runtime unless
    one is initialised)."""
    import ray.data
    ds = ray.data.from_items([{**row, "_row": i} for i, row in enumerate(rows)]).map_batches(
        Answerer, fn_constructor_kwargs={"model": model, "threads": threads, "length_config": length_config,
                                         "attention": attention},
        concurrency=workers, num_cpus=threads, batch_size=batch_size)
    out = sorted(ds.take_all(), key=lambda r: r["_row"])
    return [{k: v for k, v in r.items() if k != "_row"} for r in out]
