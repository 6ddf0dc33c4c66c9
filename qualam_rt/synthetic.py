"""Random-weight models in the engine's tensor layout, for tests and speed benchmarks."""
from __future__ import annotations

import numpy as np

from qualam_rt import reference as ref

MINILM_L6_H384 = dict(hidden=384, heads=12, intermediate=1536, layers=6, vocab_size=30522,
                      max_position=512, type_vocab_size=2, layer_norm_eps=1e-12)
LINEARS = ("qkv", "out", "ffn1", "ffn2")
# A context and questions over it for tests that serve a random model (its vocabulary is their words).
SAMPLE_CONTEXT = ("Ada Lovelace wrote the first program in 1843 . Charles Babbage designed the engine . "
                  "The engine was never finished and the program never ran on it .")
SAMPLE_QUESTIONS = ["Who wrote the first program ?", "Who designed the engine ?", "When was the program written ?",
                    "Was the engine finished ?"]


def write_sample_model(path) -> None:
    """A random model whose vocabulary covers SAMPLE_CONTEXT and SAMPLE_QUESTIONS."""
    write_random_model(path, SAMPLE_CONTEXT + " " + " ".join(SAMPLE_QUESTIONS))


def linear_shapes(config: dict) -> dict[str, tuple[int, int]]:
    H, I = config["hidden"], config["intermediate"]
    return {"qkv": (3 * H, H), "out": (H, H), "ffn1": (I, H), "ffn2": (H, I)}


def random_tensors(config: dict, seed: int = 0, std: float = 0.05) -> dict[str, np.ndarray]:
    """BERT-like random weights, int8-quantized per output channel, without input quantization."""
    rng = np.random.default_rng(seed)
    H = config["hidden"]

    def normal(*shape, s=std):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    t = {
        "embeddings.word": normal(config["vocab_size"], H, s=0.5),
        "embeddings.position": normal(config["max_position"], H, s=0.5),
        "embeddings.token_type": normal(config["type_vocab_size"], H, s=0.5),
        "embeddings.ln.weight": (1 + normal(H, s=0.1)),
        "embeddings.ln.bias": normal(H, s=0.1),
        "qa.weight": normal(2, H, s=0.5),
        "qa.bias": normal(2),
    }
    for layer in range(config["layers"]):
        p = f"layers.{layer}."
        for name, (n_out, n_in) in linear_shapes(config).items():
            # Larger QK weights give peaked attention, so significance is not flat.
            w = normal(n_out, n_in, s=(0.25 if name == "qkv" else 1.0) / np.sqrt(n_in))
            t[p + name + ".weight"], t[p + name + ".scale"] = ref.quantize_weight(w)
            t[p + name + ".bias"] = normal(n_out)
        for ln in ("ln1", "ln2"):
            t[p + ln + ".weight"] = 1 + normal(H, s=0.1)
            t[p + ln + ".bias"] = normal(H, s=0.1)
    return t


def calibrate_minmax(config: dict, tensors: dict, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Adds static `input_quant` (scale, zero point) to every linear from the fp32 ranges
    its input takes on the given (ids, types) sequences."""
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}

    def observe(name, x):
        lo[name] = min(lo.get(name, 0.0), float(np.min(x)))
        hi[name] = max(hi.get(name, 0.0), float(np.max(x)))

    enc = ref.ReferenceEncoder(config, tensors, mode="fp32", observer=observe)
    for ids, types in batches:
        enc.sequence(ids, types)
    out = dict(tensors)
    for name in lo:
        scale = max(hi[name] - lo[name], 1e-8) / 255.0
        zp = float(np.clip(np.rint(-lo[name] / scale), 0, 255))
        out[name + ".input_quant"] = np.array([scale, zp], np.float32)
    return out


def random_batch(config: dict, lengths, seed: int = 0):
    """Packed (input_ids, token_type_ids, offsets) for sequences of the given lengths."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config["vocab_size"], int(sum(lengths)), dtype=np.int32)
    types = np.concatenate([(np.arange(n) >= n // 3).astype(np.int32) for n in lengths]) if len(lengths) else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return ids, types, offsets


def tiny_tokenizer(text: str):
    """A BERT-style WordPiece tokenizer (lower case, [CLS] q [SEP] c [SEP]) whose vocabulary is
    the words and characters of `text`, for tests."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pre = pre_tokenizers.BertPreTokenizer()
    norm = normalizers.BertNormalizer(lowercase=True)
    words = sorted({w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))})
    chars = sorted({c for w in words for c in w})
    vocab = {t: i for i, t in enumerate(specials + words + [c for c in chars if c not in words] + ["##" + c for c in chars])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return tok


def write_random_model(path, text: str, config: dict | None = None, seed: int = 0, calibrate: bool = True,
                       frontier=None, default_config=None) -> dict:
    """A random-weight .qrt file whose tokenizer covers `text`; returns its metadata."""
    from qualam_rt.model_file import write_model
    tok = tiny_tokenizer(text)
    cfg = dict(hidden=32, heads=4, intermediate=64, layers=3, max_position=512, type_vocab_size=2,
               layer_norm_eps=1e-12) | (config or {}) | {"vocab_size": tok.get_vocab_size()}
    tensors = random_tensors(cfg, seed)
    if calibrate:
        lengths = [min(n, cfg["max_position"]) for n in (40, 80)]  # no longer than the model's positions
        ids, types, off = random_batch(cfg, lengths, seed=seed + 1)
        tensors = calibrate_minmax(cfg, tensors, [(ids[off[i]:off[i + 1]], types[off[i]:off[i + 1]]) for i in range(2)])
    meta = {"architecture": cfg, "tokenizer": tok.to_str(), "frontier": frontier or [],
            "default_config": default_config, "quantization": {"weights": "int8 per channel", "activations": "static minmax" if calibrate else "per row"},
            "provenance": {"source": "qualam_rt.synthetic random weights", "seed": seed}}
    write_model(path, tensors, meta)
    return meta
