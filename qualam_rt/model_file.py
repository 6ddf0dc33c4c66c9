"""The .qrt model file: a safetensors container (8-byte little-endian header length, JSON
header, raw little-endian tensors) whose `__metadata__["qualam_rt"]` holds our JSON metadata.

The reader checks the container byte by byte (header bounds, every tensor's dtype, shape and
data range), the metadata (format name and version, architecture), and a CRC32 of the
tensor data, then memory-maps the tensors.

Why not the `safetensors` library's parser: its numpy loader copies every tensor into a new
array, where we keep read-only views of one memory map (engines of the same file share its
pages); and its errors are generic, where every defect here is a ModelFileError that says
what is wrong. The files stay standard safetensors (a test reads ours with the library), this
parser is fuzzed (tests/fuzz/fuzz_model_file.py) and runs under ASan/UBSan (tools/sanitize.sh).
"""
from __future__ import annotations

import json
import math
import mmap
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from qualam_rt.errors import FormatVersionError, ModelFileError, ModelNotFoundError

FORMAT = "qualam-rt"
FORMAT_VERSION = 1
_DTYPES = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "U8": np.uint8, "I32": np.int32, "I64": np.int64}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
ARCH_KEYS = ("hidden", "heads", "intermediate", "layers", "vocab_size", "max_position", "type_vocab_size", "layer_norm_eps")


def write_model(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict) -> None:
    """Writes tensors and metadata (must hold "architecture" and "tokenizer")."""
    for key in ("architecture", "tokenizer"):
        if key not in metadata:
            raise ValueError(f"metadata needs '{key}'")
    names = sorted(tensors)
    arrays = [np.ascontiguousarray(tensors[n]) for n in names]
    header, offset = {}, 0
    for name, a in zip(names, arrays):
        if a.dtype not in _CODES:
            raise ValueError(f"tensor '{name}' has unsupported dtype {a.dtype}")
        header[name] = {"dtype": _CODES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    crc = 0
    for a in arrays:
        crc = zlib.crc32(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes(), crc)
    meta = dict(metadata, format=FORMAT, format_version=FORMAT_VERSION, data_crc32=crc)
    header["__metadata__"] = {"qualam_rt": json.dumps(meta)}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align the data to 8 bytes
    # Into a temporary file renamed over `path` at the end: a reader never sees half a file, and
    # arrays that read_model mapped from the old file stay valid (truncating a mapped file in
    # place kills the process with SIGBUS at the next access).
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for a in arrays:
                f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_model(path: str | Path, verify: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, tensors) of a .qrt file; tensors are read-only views of a memory map."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a model file" if path.is_dir() else "is not a regular file" if path.exists() else ""
        raise ModelNotFoundError(f"model file not found: {path}" + (f" ({what})" if what else ""))
    size = path.stat().st_size
    hint = f"{path} is not a valid .qrt model file"
    if size < 8:
        raise ModelFileError(f"{hint}: only {size} bytes (truncated?)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, 100_000_000):
            raise ModelFileError(f"{hint}: header length {n} exceeds the file (truncated, or not a .qrt file)")
        try:
            header = json.loads(f.read(n))
            if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
                raise ValueError("the header is not a JSON object with a __metadata__ object")
            meta = json.loads(header.pop("__metadata__")["qualam_rt"])
        except (ValueError, KeyError, TypeError, RecursionError) as e:  # json recurses per nesting level
            raise ModelFileError(f"{hint}: unreadable header or metadata ({e}); re-export the model") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{hint}: it was not written by qualam_rt")
    if meta.get("format_version") != FORMAT_VERSION:
        raise FormatVersionError(f"{path} has format version {meta.get('format_version')}; this qualam_rt reads "
                                 f"version {FORMAT_VERSION}: re-export the model with this version")
    data_len = size - 8 - n
    spans = []
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{hint}: bad entry for tensor '{name}'") from e
        if min(shape, default=1) < 0 or end - start != dtype.itemsize * int(np.prod(shape)) or start < 0 or end > data_len:
            raise ModelFileError(f"{hint}: tensor '{name}' does not fit the file (truncated or corrupted)")
        spans.append((start, end, name, dtype, shape))
    spans.sort()
    if spans and (spans[0][0] != 0 or any(a[1] != b[0] for a, b in zip(spans, spans[1:])) or spans[-1][1] != data_len):
        raise ModelFileError(f"{hint}: tensor data ranges overlap or leave gaps (corrupted)")
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    data = memoryview(mm)[8 + n:]
    if verify and zlib.crc32(data) != meta.get("data_crc32"):
        raise ModelFileError(f"{hint}: tensor data checksum mismatch (corrupted); re-export or re-download it")
    tensors = {name: np.frombuffer(data[start:end], dtype=dtype.newbyteorder("<")).reshape(shape)
               for start, end, name, dtype, shape in spans}
    arch = meta.get("architecture")
    if not isinstance(arch, dict) or any(k not in arch for k in ARCH_KEYS):
        raise ModelFileError(f"{hint}: metadata lacks the architecture ({', '.join(ARCH_KEYS)})")
    for k in ARCH_KEYS:  # a bool is an int to Python: layers = true ran a one-layer model
        v = arch[k]
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if k == "layer_norm_eps":
            ok, want = number and math.isfinite(v) and v > 0, "a positive number"
        else:
            ok, want = number and isinstance(v, int), "an integer"
        if not ok:
            raise ModelFileError(f"{hint}: architecture[{k!r}] must be {want}, got {v!r:.40}")
    return meta, tensors


def engine_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tensors as the native Encoder takes them: compact embeddings (int8 rows with
    `<name>.scale`, or float16) expanded to float32; ModelFileError for non-finite values."""
    out = {}
    for name, a in tensors.items():
        if name.endswith(".scale") and name[:-6] in tensors and name.startswith("embeddings."):
            continue
        if name.startswith("embeddings.") and a.dtype == np.int8:
            scale = tensors.get(name + ".scale")
            if scale is None or scale.shape != (a.shape[0],):
                raise ModelFileError(f"int8 embedding '{name}' needs '{name}.scale' of shape ({a.shape[0]},)")
            out[name] = a.astype(np.float32) * scale.astype(np.float32)[:, None]
        elif a.dtype == np.float16:
            out[name] = a.astype(np.float32)
        else:
            out[name] = a
        # A NaN or infinity (a diverged training run, say) passes the checksum, then turns
        # answers into garbage with NaN scores: refused here (one pass over the float tensors).
        if out[name].dtype.kind == "f" and not np.isfinite(out[name]).all():
            raise ModelFileError(f"tensor '{name}' holds NaN or infinite values: the model is broken "
                                 "(export it again from a finite checkpoint)")
    return out
