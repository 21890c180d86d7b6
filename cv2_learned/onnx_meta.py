"""Minimal reader of an ONNX file's metadata_props, input / output names and operator types (no onnx package).

ModelProto field 14 is ``repeated StringStringEntryProto metadata_props`` (key = 1, value = 2). Only the top level
of the protobuf is walked; anything malformed raises ``ValueError``.
"""
from __future__ import annotations


def _varint(buf: bytes, pos: int) -> tuple:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) of one protobuf message; value is bytes for wire type 2."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        yield field, wire, value


def read_metadata(data: bytes) -> dict:
    """ONNX file bytes -> {key: value} of its metadata_props. Raises ValueError when the file is not parseable."""
    meta = {}
    saw_graph = False
    for field, wire, value in _fields(data):
        if field == 7 and wire == 2:
            saw_graph = True
        if field == 14 and wire == 2:
            entry = {f: v for f, w, v in _fields(value) if w == 2}
            meta[entry.get(1, b"").decode("utf-8")] = entry.get(2, b"").decode("utf-8")
    if not saw_graph:
        raise ValueError("no graph found: not an ONNX model")
    return meta


def _value_names(graph: bytes, field_number: int) -> list:
    """Names of the ValueInfoProto entries of a GraphProto field (input = 11, output = 12)."""
    names = []
    for f, w, v in _fields(graph):
        if f == field_number and w == 2:
            names += [n.decode("utf-8") for nf, nw, n in _fields(v) if nf == 1 and nw == 2]
    return names


def read_io_names(data: bytes) -> tuple:
    """ONNX file bytes -> (graph input names without initializers, graph output names)."""
    for field, wire, value in _fields(data):
        if field == 7 and wire == 2:
            inits = set()
            for f, w, v in _fields(value):
                if f == 5 and w == 2:   # TensorProto initializer: name is field 8
                    inits |= {n.decode("utf-8") for nf, nw, n in _fields(v) if nf == 8 and nw == 2}
            inputs = [n for n in _value_names(value, 11) if n not in inits]
            return inputs, _value_names(value, 12)
    raise ValueError("no graph found: not an ONNX model")


def read_op_types(data: bytes) -> set:
    """ONNX file bytes -> the set of operator types of the main graph's nodes (NodeProto.op_type, field 4)."""
    for field, wire, value in _fields(data):
        if field == 7 and wire == 2:
            return {t.decode("utf-8") for f, w, node in _fields(value) if f == 1 and w == 2
                    for nf, nw, t in _fields(node) if nf == 4 and nw == 2}
    raise ValueError("no graph found: not an ONNX model")
