"""Engine: load a .qrt file once, answer questions about contexts."""
from __future__ import annotations

import numbers
import os
import threading
import weakref
from importlib import resources
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from qualam_rt import _C, decode, featurize, wordpiece
from qualam_rt.cost import encoder_macs
from qualam_rt.errors import InputError, LengthConfigError, ModelFileError, ModelNotFoundError
from qualam_rt.model_file import ARCH_KEYS, engine_tensors, read_model


ATTENTION_PATHS = ("fp32", "int16", "int8", "bf16")
TILE_PATHS = ("amx", "amx_emulated")  # the kernel paths that run bf16 attention
# Engine's budget arguments and the frontier field each one bounds.
BUDGETS = {"max_macs": "macs", "max_macs_share": "real_macs_share", "max_latency_ms": "latency_ms"}


# The engines of this process: a child forked while another thread tokenized must not
# inherit that engine's lock held (no thread of the child would ever release it).
_ENGINES: weakref.WeakSet = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    for engine in list(_ENGINES):
        engine._tokenize_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_locks_after_fork)


def default_model_path() -> Path:
    """The model bundled with the package (qualam_rt/models/default.qrt)."""
    return Path(str(resources.files("qualam_rt") / "models" / "default.qrt"))


def _as_list(items) -> list | None:
    """A list of the items of an iterable (a generator is read once); None for a str, bytes or
    anything not iterable."""
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        return None
    return items if isinstance(items, list) else list(items)


def _is_int(value) -> bool:
    """An integer, Python's or numpy's (a count read from an array), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """A real number, Python's or numpy's, but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Engine:
    """Extractive QA with a length-adaptive INT8 model.

    path: a .qrt file (None: the bundled default model). threads: kernel threads of this
    engine's calls (None: the process-wide count, qualam_rt.set_num_threads: by default the
    CPUs the process may use, at most a cgroup's CPU quota). length_config: "default" (the
    model's), "full" (no token dropping), or a tuple of per-layer keep ratios.
    max_macs / max_macs_share / max_latency_ms: instead, the most accurate configuration of the
    model's frontier within that budget (encoder MACs at n=384;
    the share of full length's MACs on the real tokens of the windows the search scored, e.g.
    0.75; measured latency at n=384). At most one of the three.
    attention: the arithmetic of attention's two products: "fp32", "int16" (int16 pairs into
    exact int32 sums; ~1e-3 relative error in the context vectors), "int8" or "bf16" (on the tile
    paths, amx and amx_emulated, only); None: the model's choice, except that where the model
    chose int16 the amx path runs bf16 if the head dim is a multiple of 32 (decided at each
    call, as the path may change): on AMX tiles it is faster, at the same held-out F1
    (bench/results/held_out_attention_amx.md, speed_attention_amx.md); and where the model
    chose bf16, a path without tiles runs int16.
    Thread-safe: several threads may call answer() on one Engine. Fork-safe: a process forked
    after an engine ran on several threads runs on one (OpenMP's threads do not survive that
    fork); to use more, fork before the first call, or start processes with "spawn" (an Engine
    pickles as its path and settings).
    """

    def __reduce__(self):
        """Pickled as its file's path and its settings: unpickling (in a spawned process, say)
        opens the file again, which must be there."""
        length_config = "full" if self.length_config is None else self.length_config
        return (Engine, (self.path, self.threads, length_config, None, None, self._attention))

    def __init__(self, path: str | Path | None = None, threads: int | None = None,
                 length_config="default", max_macs: float | None = None, max_latency_ms: float | None = None,
                 attention: str | None = None, max_macs_share: float | None = None):
        if threads is not None and not (_is_int(threads) and 1 <= threads <= _C.max_threads()):
            raise ValueError(f"threads must be an integer in [1, {_C.max_threads()}], got {threads!r:.40}")
        if path is None:
            path = default_model_path()
            if not path.is_file():
                raise ModelNotFoundError("this build of qualam_rt has no bundled default model; pass the path "
                                         "of a .qrt file (train one with the pipeline in training/)")
        self.path = Path(path)
        self.meta, tensors = read_model(self.path)
        self.architecture = {k: self.meta["architecture"][k] for k in ARCH_KEYS}
        try:
            tensors = engine_tensors(tensors)
        except ModelFileError as e:
            raise ModelFileError(f"{self.path}: {e}") from None
        try:
            self._encoder = _C.Encoder(self.architecture, tensors)
            self._tokenizer = Tokenizer.from_str(self.meta["tokenizer"])
            # A tokenizer can load and still fail on every pair (its template naming a special
            # token it lacks, say), or make ids the encoder refuses: find out now, not at the
            # first question.
            pair = self._tokenizer.encode("a", "b")
            self._native_tokenizer = wordpiece.NativeWordPiece.of(self._tokenizer)
            largest_id = max(self._tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
        except BaseException as e:  # the encoder raises ValueError, tokenizers an Exception or a panic
            if not featurize.is_tokenizer_error(e):
                raise
            raise ModelFileError(f"{self.path}: {type(e).__name__}: {e}") from e
        if largest_id >= self.architecture["vocab_size"]:
            raise ModelFileError(f"{self.path}: the tokenizer has token id {largest_id}, but the embeddings "
                                 f"only {self.architecture['vocab_size']} rows")
        if max(pair.type_ids, default=0) >= self.architecture["type_vocab_size"]:
            raise ModelFileError(f"{self.path}: the tokenizer makes token type {max(pair.type_ids)}, but the "
                                 f"model has {self.architecture['type_vocab_size']} token type(s)")
        special_tokens = sum(pair.special_tokens_mask)
        self._tokenize_lock = threading.Lock()
        _ENGINES.add(self)
        self.threads = None if threads is None else int(threads)
        self.max_seq_len, self._doc_stride, self._max_query_len = featurize.window_limits(
            int(self.architecture["max_position"]), special_tokens)
        if self._max_query_len < 1:
            raise ModelFileError(f"{self.path}: max_position {self.architecture['max_position']} leaves no room "
                                 "for both a question and a context")
        self.frontier = self._checked_frontier(self.meta.get("frontier", []))
        self.length_config = self._resolve(length_config, {"max_macs": max_macs, "max_macs_share": max_macs_share,
                                                           "max_latency_ms": max_latency_ms})
        if attention is not None and attention not in ATTENTION_PATHS:
            raise ValueError(f"attention must be one of {ATTENTION_PATHS}, not {attention!r}")
        if attention == "bf16" and not self._bf16_attention_runs():
            raise ValueError(f"bf16 attention runs on the tile paths {TILE_PATHS} with head dims that are "
                             f"multiples of 32; this process runs {_C.isa()!r}, head dim {self._head_dim()}")
        self._attention = attention  # None: the model's choice (see attention)
        self._model_attention = self.meta.get("attention", "int16")
        if self._model_attention not in ATTENTION_PATHS:
            raise ModelFileError(f"{self.path}: the model's attention path {self._model_attention!r} "
                                 f"is not one of {ATTENTION_PATHS}")

    @property
    def attention(self) -> str:
        """The attention path the next call runs."""
        if self._attention is not None:
            return self._attention
        if self._model_attention == "int16" and _C.isa() == "amx" and self._bf16_attention_runs():
            return "bf16"
        if self._model_attention == "bf16" and not self._bf16_attention_runs():
            return "int16"  # a model exported for AMX still answers elsewhere
        return self._model_attention

    def _head_dim(self) -> int:
        return self.architecture["hidden"] // self.architecture["heads"]

    def _bf16_attention_runs(self) -> bool:
        """Whether bf16 attention runs here: on the tiles, in head dims of whole tiles."""
        return _C.isa() in TILE_PATHS and self._head_dim() % 32 == 0

    # ---- configuration -----------------------------------------------------------------
    def _resolve(self, length_config, budgets: dict | None = None):
        """The length configuration; budgets: {argument of BUDGETS: value or None}."""
        budgets = {k: v for k, v in (budgets or {}).items() if v is not None}
        if len(budgets) > 1:
            raise LengthConfigError(f"give at most one of {', '.join(BUDGETS)}")
        if budgets:
            (name, budget), = budgets.items()
            if not (_is_real(budget) and budget > 0):  # inf: no bound
                raise LengthConfigError(f"{name} must be a positive number, got {budget!r:.40}")
            key = BUDGETS[name]
            fits = [p for p in self.frontier if p.get(key) is not None and p[key] <= budget]
            if not fits:
                raise LengthConfigError(f"no configuration of this model's frontier has {key} <= {budget}; "
                                        f"the smallest has {min((p.get(key) or np.inf) for p in self.frontier) if self.frontier else 'none (empty frontier)'}")
            best = max(fits, key=lambda p: p.get("f1", 0.0))
            return self._check({"tokens": best["tokens"]} if "tokens" in best else best["ratios"])
        if isinstance(length_config, str):
            if length_config == "full":
                return None
            if length_config == "default":
                d = self.meta.get("default_config")
                try:
                    return None if d is None else self._check(d)
                except LengthConfigError as e:  # the file's fault, not the caller's
                    raise ModelFileError(f"{self.path}: the model's default_config: {e}") from None
            raise LengthConfigError(f"length_config must be 'default', 'full', a tuple of keep ratios, "
                                    f"{{'ratios': [...]}} or {{'tokens': [...]}}, not {length_config!r}")
        return self._check(length_config)

    FRONTIER_NUMBERS = ("f1", *BUDGETS.values())

    def _checked_frontier(self, frontier) -> list[dict]:
        """The model's frontier: a list of {"ratios": [...]} or {"tokens": [...]} with numbers
        (FRONTIER_NUMBERS); ModelFileError else (it broke budget choices and `bench` later)."""
        if not isinstance(frontier, list):
            raise ModelFileError(f"{self.path}: the model's frontier is a {type(frontier).__name__}, not a list")
        for i, point in enumerate(frontier):
            if not isinstance(point, dict) or ("ratios" in point) == ("tokens" in point):
                raise ModelFileError(f"{self.path}: frontier entry {i} needs 'ratios' or 'tokens', got {point!r:.60}")
            try:
                self._check({"tokens": point["tokens"]} if "tokens" in point else point["ratios"])
            except LengthConfigError as e:
                raise ModelFileError(f"{self.path}: frontier entry {i}: {e}") from None
            for key in self.FRONTIER_NUMBERS:
                v = point.get(key)
                if v is not None and not (_is_real(v) and np.isfinite(v)):
                    raise ModelFileError(f"{self.path}: frontier entry {i}: {key} must be a number, got {v!r:.40}")
        return list(frontier)

    def _check(self, config):
        """A tuple of keep ratios, or {"tokens": tuple of budgets} (the paper's form)."""
        kind = "ratios"
        if isinstance(config, dict):
            if len(config) != 1 or next(iter(config)) not in ("ratios", "tokens"):
                raise LengthConfigError(f"a length configuration dict has one key, 'ratios' or 'tokens', got {config!r}")
            (kind, config), = config.items()
        L = self.architecture["layers"]
        try:
            values = tuple(float(r) for r in config) if kind == "ratios" else tuple(config)
        except (TypeError, ValueError) as e:
            raise LengthConfigError(f"a length configuration is a sequence of keep {kind}, got {config!r}") from e
        if len(values) != L:
            raise LengthConfigError(f"length configuration has {len(values)} {kind}; the model has {L} layers")
        if kind == "tokens":
            if not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 1 for b in values):
                raise LengthConfigError(f"token budgets must be integers >= 1, got {values}")
            values = tuple(int(b) for b in values)
        elif not all(0.0 < r <= 1.0 for r in values):
            raise LengthConfigError(f"keep ratios must lie in (0, 1], got {values}")
        if any(b > a for a, b in zip(values, values[1:])):
            raise LengthConfigError(f"keep {kind} must be non-increasing, got {values}")
        return {"tokens": values} if kind == "tokens" else values

    # ---- answering ---------------------------------------------------------------------
    @staticmethod
    def _validate(question, context):
        for name, value in (("question", question), ("context", context)):
            if not isinstance(value, str):
                raise InputError(f"{name} must be a str, got {type(value).__name__}")
            if not value.strip():
                raise InputError(f"{name} is empty; pass some text")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InputError(f"{name} is not valid Unicode text ({e.reason} at index {e.start}); "
                                 "decode the input with errors='replace'") from None

    def logits(self, windows: list[featurize.Window], length_config="same") -> list[np.ndarray]:
        """Start/end logits [n, 2] of each window (one packed native call)."""
        windows = _as_list(windows)
        if windows is None or not all(isinstance(w, featurize.Window) for w in windows):
            raise InputError("windows must be a list of the featurize.Window objects Engine.windows makes")
        ratios = self.length_config if length_config == "same" else self._resolve(length_config)
        ids, types, offsets = featurize.pack(windows)
        tokens = list(ratios["tokens"]) if isinstance(ratios, dict) else None
        ratios = None if ratios is None or tokens is not None else list(ratios)
        out = self._encoder.forward(ids, types, offsets, ratios, keep_tokens=tokens,
                                    attention=self.attention, threads=self.threads or 0)["logits"]
        return [out[offsets[i]:offsets[i + 1]] for i in range(len(windows))]

    def windows(self, pairs: list[tuple[str, str]]) -> list[featurize.Window]:
        """The windows of (question, context) pairs of str, as checked_pairs returns them (a
        tokenizer failure on such pairs is the model's: ModelFileError)."""
        pairs = _as_list(pairs)
        if pairs is None or not all(
                isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs):
            raise InputError("pairs must be (question, context) pairs of str; checked_pairs says what is wrong")
        with self._tokenize_lock:
            try:
                return featurize.make_windows(self._tokenizer, pairs, max_seq_len=self.max_seq_len,
                                              doc_stride=self._doc_stride, max_query_len=self._max_query_len,
                                              native=self._native_tokenizer)
            except BaseException as e:  # a tokenizer panic is a BaseException: make it an error
                if not featurize.is_tokenizer_error(e):
                    raise
                raise ModelFileError(f"{self.path}: the model's tokenizer failed on this input: "
                                     f"{type(e).__name__}: {e}") from e

    def answer_batch(self, pairs, batch_size: int = 32, top_k: int = 1, max_answer_len: int = 30):
        """answer() for each (question, context) pair; windows run `batch_size` at a time."""
        pairs = self.checked_pairs(pairs, top_k, max_answer_len)
        if not (_is_int(batch_size) and batch_size >= 1):
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r:.40}")
        return self._answer_checked(pairs, int(batch_size), int(top_k), int(max_answer_len))

    def _answer_checked(self, pairs, batch_size: int, top_k: int, max_answer_len: int):
        """answer_batch() of pairs checked_pairs() already accepted."""
        windows = self.windows(pairs)
        logits: list[np.ndarray] = []
        for i in range(0, len(windows), batch_size):
            logits += self.logits(windows[i:i + batch_size])
        return self.answers_from(pairs, windows, logits, top_k, max_answer_len)

    def checked_pairs(self, pairs, top_k: int = 1, max_answer_len: int = 30) -> list[tuple[str, str]]:
        """The pairs as a list of (question, context) tuples; InputError for anything else."""
        pairs = _as_list(pairs)
        if pairs is None:
            raise InputError("pairs must be a list of (question, context) tuples")
        for p in pairs:
            if not isinstance(p, (tuple, list)) or len(p) != 2:
                raise InputError(f"each pair must be (question, context), got {p!r:.80}")
            self._validate(*p)
        for name, value in (("top_k", top_k), ("max_answer_len", max_answer_len)):
            if not (_is_int(value) and value >= 1):
                raise InputError(f"{name} must be a positive integer, got {value!r:.40}")
        return [(q, c) for q, c in pairs]

    @staticmethod
    def answers_from(pairs, windows, logits, top_k: int = 1, max_answer_len: int = 30) -> list:
        """The answers of `pairs` from their windows (window.example indexes pairs) and logits."""
        by_pair: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_pair.setdefault(w.example, []).append(i)
        results = []
        for k, (_, context) in enumerate(pairs):
            idx = by_pair.get(k, [])
            spans = decode.best_spans(context, [windows[i] for i in idx], [logits[i] for i in idx],
                                     top_k=top_k, max_answer_len=max_answer_len)
            found = [{"answer": s.text, "score": s.score, "start": s.start, "end": s.end} for s in spans]
            if not found:
                found = [{"answer": "", "score": float("-inf"), "start": 0, "end": 0}]
            results.append(found[0] if top_k == 1 else found)
        return results

    def answer(self, question: str, context: str, top_k: int = 1, max_answer_len: int = 30):
        """{"answer", "score", "start", "end"} (character offsets into context); a list of
        them, best first, when top_k > 1."""
        self._validate(question, context)
        return self.answer_batch([(question, context)], top_k=top_k, max_answer_len=max_answer_len)[0]

    @property
    def kernel_threads(self) -> int:
        """The threads this engine's kernels run on: its own count, else the process-wide one;
        1 in a child forked after kernels ran on several threads."""
        return 1 if _C.single_threaded_after_fork() else self.threads or _C.num_threads()

    def info(self) -> dict:
        return {"path": str(self.path), "architecture": self.architecture,
                "quantization": self.meta.get("quantization"), "isa": _C.isa(), "amx": _C.amx_status(),
                "threads": self.kernel_threads,
                "tokenizer": "tokenizers" + (" + native WordPiece (csrc/wordpiece.h)" if self._native_tokenizer else ""),
                "length_config": self.length_config, "attention": self.attention, "default_config": self.meta.get("default_config"),
                "frontier": self.frontier, "provenance": self.meta.get("provenance"),
                "macs_at_384": encoder_macs(self.architecture, 384, self.length_config)}
