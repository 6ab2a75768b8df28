"""A small reader and writer of the safetensors format (the `safetensors` package is not needed):
an 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}} with
an optional "__metadata__" {str: str}, then one byte buffer the tensors cover exactly."""
import json
import os
import struct

import torch

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100_000_000


class CheckpointError(ValueError):
    """A checkpoint or weights file that does not fit (the message names the file and the problem)."""


class SafetensorsError(CheckpointError):
    """A file that is not a valid safetensors file (the message names the file and the problem); a
    CheckpointError, so that one except clause catches every failure of load()."""


def read_safetensors(path):
    """Returns ({name: tensor}, {key: str}) in file order; every defect raises SafetensorsError."""
    path = os.fspath(path)

    def fail(what):
        raise SafetensorsError(f"safetensors file '{path}': {what}")

    if not os.path.isfile(path):
        fail("is a folder, not a file" if os.path.isdir(path) else "no such file")
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        fail(f"the file is only {len(raw)} bytes long; a safetensors file starts with an 8-byte header length")
    n = struct.unpack("<Q", raw[:8])[0]
    if n == 0 or n > _MAX_HEADER or n > len(raw) - 8:
        fail(f"the header length {n} does not fit the {len(raw) - 8} bytes that follow it: "
             "the file is truncated or not a safetensors file")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"the header is not valid JSON: {e}")
    if not isinstance(header, dict):
        fail("the header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        fail("__metadata__ is not an object of strings")
    data = memoryview(raw)[8 + n:]
    out, spans = {}, []
    for name, t in header.items():
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            fail(f"tensor '{name}': the entry must have exactly dtype, shape and data_offsets")
        if t["dtype"] not in _DTYPES:
            fail(f"tensor '{name}': unsupported dtype '{t['dtype']}'")
        shape, offs = t["shape"], t["data_offsets"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            fail(f"tensor '{name}': 'shape' {shape} is not a list of non-negative integers")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            fail(f"tensor '{name}': bad data_offsets {offs}")
        if offs[1] > len(data):
            fail(f"tensor '{name}': data_offsets {offs} reach past the end of the data buffer ({len(data)} bytes): "
                 "the file is truncated")
        dt = _DTYPES[t["dtype"]]
        numel = 1
        for d in shape:
            numel *= d
        need = numel * torch.tensor([], dtype=dt).element_size()
        if offs[1] - offs[0] != need:
            fail(f"tensor '{name}': data_offsets {offs} span {offs[1] - offs[0]} bytes, but shape {shape} of "
                 f"{t['dtype']} needs {need}")
        spans.append((offs[0], offs[1], name))
        buf = bytearray(data[offs[0]:offs[1]])
        out[name] = (torch.frombuffer(buf, dtype=dt) if need else torch.empty(0, dtype=dt)).reshape(shape)
    cursor = 0
    for b, e, name in sorted(spans):
        if b != cursor:
            fail(f"tensor '{name}' " + ("overlaps the one before it" if b < cursor else "is preceded by a gap"))
        cursor = e
    if cursor != len(data):
        fail(f"{len(data) - cursor} bytes of trailing data follow the last tensor: the file is corrupt")
    return out, dict(meta)


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} (in the given order) with string metadata; atomically (temporary + rename)."""
    path = os.fspath(path)
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in _NAMES:
            raise ValueError(f"write_safetensors: tensor '{name}' has dtype {t.dtype}, which safetensors cannot hold here")
        b = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
