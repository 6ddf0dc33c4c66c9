"""qualam-rt: answer questions, inspect, evaluate and benchmark .qrt models.

    qualam-rt answer "Who wrote it?" "It was written by Ada."      (bundled default model)
    qualam-rt answer --model m.qrt "Who wrote it?" --context-file doc.txt
    echo '{"question": "...", "context": "..."}' | qualam-rt answer -
    qualam-rt info m.qrt
    qualam-rt eval m.qrt dev-v1.1.json --out report.json
    qualam-rt bench m.qrt --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from qualam_rt import featurize, squad
from qualam_rt.engine import ATTENTION_PATHS, Engine
from qualam_rt.errors import LengthConfigError, QualamError
from qualam_rt.timing import cpu_model, time_call


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a batch of 0 divided by zero; a negative length)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (--limit -5 dropped the last 5 questions)."""
    return _int_at_least(text, 0)


def parse_length_config(s: str | None):
    """default | full | r1,r2,... (keep ratios) | tokens:b1,b2,... (token budgets)."""
    if s is None or s in ("default", "full"):
        return s or "default"
    kind, _, values = s.rpartition(":")
    numbers = values.replace("(", "").replace(")", "").split(",")
    try:
        if kind == "tokens":
            return {"tokens": tuple(int(x) for x in numbers)}
        if kind in ("", "ratios"):
            return tuple(float(x) for x in numbers)
    except ValueError:
        pass
    raise LengthConfigError(f"--length-config must be default, full, r1,r2,... or tokens:b1,b2,..., not {s!r}")


def _engine(args) -> Engine:
    return Engine(args.model, threads=args.threads, length_config=parse_length_config(args.length_config),
                  attention=getattr(args, "attention", None))


def cmd_answer(args) -> dict:
    if args.question == "-":
        try:
            blob = json.loads(sys.stdin.read())
        except RecursionError:  # json's decoder recurses per nesting level
            raise QualamError("stdin's JSON is nested too deeply") from None
        if not isinstance(blob, dict):
            raise QualamError('stdin must hold a JSON object {"question": ..., "context": ...}')
        question, context = blob.get("question"), blob.get("context")
    else:
        question = args.question
        if args.context_file:
            context = Path(args.context_file).read_text(encoding="utf-8")
        elif args.context is not None:
            context = sys.stdin.read() if args.context == "-" else args.context
        else:
            raise QualamError("give the context as an argument, with --context-file, or '-' for stdin")
    return _engine(args).answer(question, context, top_k=args.top_k, max_answer_len=args.max_answer_len)


def cmd_serve(args) -> None:
    # OpenMP's worker threads spin ~3 ms after each parallel region by default; in a server they
    # would take the cores from the event loop and the batcher between calls, and with the
    # passive policy (no spinning) every region of a forward pays a wake-up: a short spin
    # (GOMP_SPINCOUNT=2000, ~20 us) covers the gaps inside a forward only (1 client: HTTP
    # added 21% with passive, 14% with it; bench/results/serve_overhead.md). libgomp reads these
    # when it loads, so the process restarts itself once with them set, unless the user chose.
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "passive"
        os.environ["GOMP_SPINCOUNT"] = "2000"
        os.execv(sys.executable, [sys.executable, "-m", "qualam_rt.cli"] + sys.argv[1:])
    try:
        from qualam_rt.serve import serve
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise QualamError(f"serving needs FastAPI and uvicorn: pip install 'qualam_rt[serve]' ({e})") from None
    serve(_engine(args), args.host, args.port, max_batch_windows=args.max_batch_windows,
          max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, access_log=args.access_log)


def cmd_info(args) -> dict:
    return _engine(args).info()


def cmd_eval(args) -> dict:
    from tqdm import tqdm
    engine = _engine(args)
    examples = squad.load_examples(args.data)
    if args.limit:
        examples = examples[:args.limit]
    unanswered = [e.id for e in examples if not e.answers]
    if unanswered:  # checked before the model runs: EM/F1 need a reference answer
        raise QualamError(f"{len(unanswered)} question(s) of {args.data} have no answers (the first: "
                          f"{unanswered[0]!r}); eval scores SQuAD v1.1 files, where every question has one "
                          "(SQuAD v2's unanswerable questions are not supported)")
    preds, t0 = {}, time.perf_counter()
    if args.ray:
        try:
            from qualam_rt.ray import answer_dataset
        except ImportError as e:
            raise QualamError(f"--ray needs Ray: pip install 'qualam_rt[ray]' ({e})") from None
        rows = [{"id": e.id, "question": e.question, "context": e.context} for e in examples]
        for row in answer_dataset(rows, args.model, workers=args.ray, threads=args.threads or 1, batch_size=args.batch,
                                  length_config=engine.length_config or "full", attention=args.attention):
            if row["error"]:
                raise QualamError(f"question {row['id']}: {row['error']}")
            preds[row["id"]] = row["answer"]
    else:
        for i in tqdm(range(0, len(examples), args.batch), desc="eval", unit_scale=args.batch):
            chunk = examples[i:i + args.batch]
            for ex, r in zip(chunk, engine.answer_batch([(e.question, e.context) for e in chunk])):
                preds[ex.id] = r["answer"]
    import platform
    from qualam_rt import _C
    report = squad.evaluate(examples, preds) | {
        "seconds": time.perf_counter() - t0, "model": str(engine.path), "length_config": engine.length_config,
        "data": str(args.data), "command": " ".join(["qualam-rt"] + sys.argv[1:]), "isa": _C.isa(),
        "attention": engine.attention, "threads": engine.kernel_threads, "cpu": cpu_model(),
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
        "provenance": engine.meta.get("provenance"), "ray_workers": args.ray or None}
    if args.out:
        Path(args.out).write_text(json.dumps({"report": report, "predictions": preds}, indent=1))
    return report


def cmd_bench(args) -> dict:
    """Encoder latency per length configuration on synthetic windows of the given lengths."""
    engine = _engine(args)
    rng = np.random.default_rng(0)
    vocab = engine.architecture["vocab_size"]

    def config(c):  # keep ratios as a tuple, token budgets as {"tokens": tuple}
        return {"tokens": tuple(c["tokens"])} if isinstance(c, dict) else tuple(c)
    configs = [("full", None)] + [(f"frontier {i}", config(p if "tokens" in p else p["ratios"]))
                                  for i, p in enumerate(engine.frontier)]
    if engine.meta.get("default_config"):
        configs.append(("default", config(engine.meta["default_config"])))
    out = []
    for n in args.lengths:
        windows = [featurize.Window(0, rng.integers(min(1000, vocab - 1), vocab, n, dtype=np.int32), np.zeros(n, np.int32),
                                np.full((n, 2), -1)) for _ in range(args.batch)]
        for name, ratios in configs:
            t = time_call(lambda: engine.logits(windows, "full" if ratios is None else ratios), warmup=1,
                          repeats=args.repeats)
            out.append({"n": n, "batch": args.batch, "config": name, "ratios": ratios,
                        "ms_per_sequence": 1e3 * t["median"] / args.batch})
    return {"isa": engine.info()["isa"], "threads": engine.info()["threads"], "results": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="qualam-rt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, model_positional=False):
        if model_positional:
            p.add_argument("model", nargs="?", default=None, help=".qrt file (default: the bundled model)")
        else:
            p.add_argument("--model", default=None, help=".qrt file (default: the bundled model)")
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--length-config", default=None,
                       help="default | full | r1,r2,... keep ratios | tokens:b1,b2,... token budgets (the paper's form)")
        p.add_argument("--attention", choices=ATTENTION_PATHS, default=None, help="attention path (default: the model's)")

    p = sub.add_parser("answer", help="answer one question (JSON on stdout)")
    p.add_argument("question", help="the question, or '-' to read {'question', 'context'} JSON from stdin")
    p.add_argument("context", nargs="?", default=None, help="the context, or '-' for stdin")
    p.add_argument("--context-file")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--max-answer-len", type=int, default=30)
    common(p)
    p.set_defaults(fn=cmd_answer)
    p = sub.add_parser("info", help="describe a model file")
    common(p, model_positional=True)
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("eval", help="EM/F1 on a SQuAD v1.1 json file")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--out", help="write the report and predictions here (JSON)")
    p.add_argument("--limit", type=non_negative_int, default=0, help="the first N questions (0: all)")
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--length-config", default=None)
    p.add_argument("--attention", choices=ATTENTION_PATHS, default=None)
    p.add_argument("--ray", type=non_negative_int, default=0, metavar="WORKERS",
                   help="answer through Ray Data with this many engine actors of --threads threads each")
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("serve", help="HTTP server with dynamic batching (pip install 'qualam_rt[serve]')")
    common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-windows", type=int, default=32, help="windows per packed native call, at most")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    p.add_argument("--max-queue", type=int, default=256, help="waiting requests beyond this get 503")
    p.add_argument("--access-log", action="store_true", help="log a line per request (off: it costs time on every request)")
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("bench", help="latency per length configuration")
    common(p, model_positional=True)
    p.add_argument("--lengths", type=positive_int, nargs="+", default=[128, 384])
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--repeats", type=positive_int, default=10)
    p.set_defaults(fn=cmd_bench)
    args = ap.parse_args(argv)
    try:
        result = args.fn(args)
    except (QualamError, OSError, ValueError) as e:  # JSONDecodeError is a ValueError
        print(f"qualam-rt: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
