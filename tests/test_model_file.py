"""The .qrt container: round trip and every kind of damage giving a specific exception."""
import json
import os
import re
import struct

import numpy as np
import pytest

from qualam_rt import Engine
from qualam_rt import synthetic as syn
from qualam_rt.errors import FormatVersionError, ModelFileError, ModelNotFoundError
from qualam_rt.model_file import engine_tensors, read_model, write_model
from qualam_rt.reference import quantize_weight

TEXT = "Ada Lovelace wrote the first program in 1843 for the analytical engine of Charles Babbage."


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.qrt"
    syn.write_random_model(path, TEXT)
    return path


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(7, dtype=np.int8),
               "c": rng.integers(0, 9, (2, 2, 2)).astype(np.int32), "d": np.zeros((0, 4), np.float16)}
    meta = {"architecture": {"hidden": 1}, "tokenizer": "{}", "frontier": [{"ratios": [1.0], "f1": 1.5}]}
    write_model(tmp_path / "x.qrt", tensors, meta)
    with pytest.raises(ModelFileError, match="architecture"):
        read_model(tmp_path / "x.qrt")  # architecture incomplete: checked last
    arch = dict(syn.MINILM_L6_H384)
    write_model(tmp_path / "x.qrt", tensors, dict(meta, architecture=arch))
    got_meta, got = read_model(tmp_path / "x.qrt")
    assert got_meta["frontier"] == meta["frontier"] and got_meta["architecture"] == arch
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)


def test_int8_embeddings_expand_to_float32():
    w = np.random.default_rng(1).standard_normal((10, 6)).astype(np.float32)
    q, s = quantize_weight(w)
    out = engine_tensors({"embeddings.word": q, "embeddings.word.scale": s})
    assert set(out) == {"embeddings.word"} and out["embeddings.word"].dtype == np.float32
    np.testing.assert_allclose(out["embeddings.word"], w, atol=np.abs(w).max() / 127)


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"not found: /nonexistent/model.qrt$"):
        Engine("/nonexistent/model.qrt")
    with pytest.raises(ModelNotFoundError, match="is a directory, not a model file"):
        Engine(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ModelNotFoundError, match="is not a regular file"):
        Engine(tmp_path / "fifo")


def test_not_a_model_file(tmp_path):
    p = tmp_path / "x.qrt"
    p.write_text("hello, I am a text file and certainly not a model")
    with pytest.raises(ModelFileError, match="not a valid"):
        Engine(p)
    p.write_bytes(b"")
    with pytest.raises(ModelFileError, match="truncated"):
        Engine(p)


def test_truncation_at_random_offsets(model_path, tmp_path):
    blob = model_path.read_bytes()
    rng = np.random.default_rng(0)
    for cut in sorted(set(rng.integers(1, len(blob) - 1, 25).tolist()) | {4, 8, 20, len(blob) - 1}):
        p = tmp_path / f"cut{cut}.qrt"
        p.write_bytes(blob[:cut])
        with pytest.raises(ModelFileError):
            Engine(p)


def test_flipped_bytes_anywhere(model_path, tmp_path):
    blob = bytearray(model_path.read_bytes())
    (n,) = struct.unpack("<Q", blob[:8])
    rng = np.random.default_rng(1)
    positions = rng.integers(8, 8 + n, 15).tolist() + rng.integers(8 + n, len(blob), 15).tolist()
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 0x5A
        p = tmp_path / "flip.qrt"
        p.write_bytes(bytes(bad))
        with pytest.raises(ModelFileError):
            Engine(p)


def rewrite_metadata(model_path, tmp_path, change):
    meta, tensors = read_model(model_path)
    meta = change(dict(meta))
    p = tmp_path / "changed.qrt"
    write_model(p, {k: np.array(v) for k, v in tensors.items()}, meta)
    return p


@pytest.mark.parametrize("header", [b"5", b'"x"', b"null", b"[]", b'{"__metadata__": 3}', b'{"__metadata__": []}',
                                    b'{"__metadata__": {"qualam_rt": "[1]"}}', b'{"t": 5, "__metadata__": {}}',
                                    b"[" * 5000 + b"]" * 5000,
                                    b'{"__metadata__": {"qualam_rt": "' + b"[" * 5000 + b"]" * 5000 + b'"}}'])
def test_a_header_that_is_json_but_not_a_model_header(tmp_path, header):
    """Valid JSON of the wrong shape raised AttributeError/TypeError instead of ModelFileError;
    JSON nested 5,000 deep, RecursionError (json's decoder recurses per level)."""
    p = tmp_path / "odd.qrt"
    p.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ModelFileError):
        read_model(p)
    with pytest.raises(ModelFileError):
        Engine(p)


def test_unknown_format_version(model_path, tmp_path, monkeypatch):
    import qualam_rt.model_file as mf
    meta, tensors = read_model(model_path)
    monkeypatch.setattr(mf, "FORMAT_VERSION", 99)
    p = tmp_path / "v99.qrt"
    write_model(p, {k: np.array(v) for k, v in tensors.items()}, meta)
    monkeypatch.undo()
    with pytest.raises(FormatVersionError, match="version 99"):
        Engine(p)


def test_tensor_shape_and_dtype_mismatch(model_path, tmp_path):
    meta, tensors = read_model(model_path)
    for name, bad in [("layers.0.ffn1.weight", tensors["layers.0.ffn1.weight"][:, :-1]),
                      ("qa.bias", tensors["qa.bias"].astype(np.int32)),
                      ("layers.2.ln2.weight", None)]:
        t = {k: np.array(v) for k, v in tensors.items()}
        if bad is None:
            del t[name]
        else:
            t[name] = np.ascontiguousarray(bad)
        p = tmp_path / "bad.qrt"
        write_model(p, t, meta)
        with pytest.raises(ModelFileError, match=name.replace(".", r"\.")):
            Engine(p)


@pytest.mark.parametrize("name, value", [("embeddings.ln.bias", np.nan), ("layers.1.ffn1.bias", np.inf),
                                         ("layers.0.qkv.scale", -np.inf), ("embeddings.position", np.nan)])
def test_a_model_with_nan_or_infinite_values_is_refused(model_path, tmp_path, name, value):
    """Such a file passes the checksum (it was written that way: a diverged training run), and
    answered with NaN scores or garbage."""
    meta, tensors = read_model(model_path)
    t = {k: np.array(v) for k, v in tensors.items()}
    t[name].flat[t[name].size // 2] = value
    p = tmp_path / "nan.qrt"
    write_model(p, t, meta)
    with pytest.raises(ModelFileError, match=f"tensor '{re.escape(name)}' holds NaN or infinite values"):
        Engine(p)


def test_architecture_mismatch(model_path, tmp_path):
    p = rewrite_metadata(model_path, tmp_path, lambda m: m | {"architecture": m["architecture"] | {"hidden": 48}})
    with pytest.raises(ModelFileError, match="shape"):
        Engine(p)


@pytest.mark.parametrize("change, message", [
    ({"layers": True}, "architecture['layers'] must be an integer, got True"),  # ran one layer of three
    ({"hidden": 32.0}, "architecture['hidden'] must be an integer"),  # a pybind cast message before
    ({"layer_norm_eps": "x"}, "architecture['layer_norm_eps'] must be a positive number"),
    ({"layer_norm_eps": float("inf")}, "must be a positive number, got inf"),
])
def test_architecture_values_of_the_wrong_type(model_path, tmp_path, change, message):
    p = rewrite_metadata(model_path, tmp_path, lambda m: m | {"architecture": m["architecture"] | change})
    with pytest.raises(ModelFileError, match=re.escape(message)):
        Engine(p)


@pytest.mark.parametrize("change, message", [
    ({"frontier": "x"}, "the model's frontier is a str, not a list"),
    ({"frontier": ["x"]}, "frontier entry 0 needs 'ratios' or 'tokens'"),
    ({"frontier": [{"macs": 1.0}]}, "frontier entry 0 needs 'ratios' or 'tokens'"),  # KeyError before
    ({"frontier": [{"ratios": [1, 1, 1], "macs": "big"}]}, "frontier entry 0: macs must be a number"),  # TypeError
    ({"frontier": [{"ratios": [0.5, 0.9, 0.1]}]}, "frontier entry 0: keep ratios must be non-increasing"),
    ({"default_config": "abc"}, "the model's default_config: a length configuration is a sequence"),
])
def test_a_frontier_or_default_configuration_that_is_not_one_is_refused(model_path, tmp_path, change, message):
    """They loaded, then a budget (max_macs=...) or `qualam-rt bench` failed with AttributeError,
    KeyError or TypeError; a bad default configuration was the caller's LengthConfigError."""
    p = rewrite_metadata(model_path, tmp_path, lambda m: m | change)
    with pytest.raises(ModelFileError, match=re.escape(message)):
        Engine(p)


def test_bad_tokenizer(model_path, tmp_path):
    p = rewrite_metadata(model_path, tmp_path, lambda m: m | {"tokenizer": json.dumps({"not": "a tokenizer"})})
    with pytest.raises(ModelFileError):
        Engine(p)


def test_our_files_are_standard_safetensors(model_path):
    """The container stays readable by the safetensors library itself."""
    from safetensors.numpy import load_file
    meta, ours = read_model(model_path)
    theirs = load_file(str(model_path))
    assert set(theirs) == set(ours)
    for name, a in ours.items():
        np.testing.assert_array_equal(theirs[name], a)


def test_a_model_is_rewritten_in_place_while_its_arrays_are_mapped(tmp_path):
    """read_model maps the file; writing the same path must not truncate it under the mapping
    (SIGBUS at the next access) nor leave a half-written file: the write goes to a temporary
    file renamed over the old one."""
    path = tmp_path / "m.qrt"
    syn.write_random_model(path, "a b c d")
    meta, tensors = read_model(path)
    before = {k: np.array(v) for k, v in tensors.items()}
    write_model(path, tensors, meta | {"note": "rewritten"})
    for k, v in tensors.items():  # the old mapping is still readable and unchanged
        np.testing.assert_array_equal(v, before[k])
    meta2, tensors2 = read_model(path)
    assert meta2["note"] == "rewritten" and sorted(tensors2) == sorted(before)
    assert [p.name for p in tmp_path.iterdir()] == ["m.qrt"]  # no temporary file left
