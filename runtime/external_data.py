"""The external-data locations an ONNX file names, read from its protobuf bytes without the ``onnx`` package.

Place in the data flow: ``runtime.bundle.verify`` calls ``external_locations`` on every ONNX graph of a bundle
before ONNX Runtime opens one, and refuses a graph that would read its weights from anywhere but the data file the
manifest lists beside it (hash-checked): ONNX Runtime opens whatever a tensor's ``external_data`` ``location``
says, and only releases from 1.24.1 on refuse a location outside the model's folder. The runtime install has no
``onnx`` package (it is the export side's), so this reads protobuf's wire format directly: a key is a varint
(field number << 3 | wire type), and only the message fields on the way to a ``TensorProto`` are descended into
(the field numbers of onnx.proto, below), and only into those whose bytes hold the key ``location`` at all (a
search at C speed): a node without external data is skipped whole, and every other field is skipped by its wire
type, so a graph costs a walk over its top-level field headers and its external tensors, not over its bytes.
"""

from __future__ import annotations

import mmap
import os

# onnx.proto: message -> {field number: the message type that field holds}, only the paths that reach a TensorProto
# (initializers, sparse initializers, attribute tensors, subgraphs of If/Loop/Scan, functions, training graphs).
ONNX_MESSAGES = {
    "ModelProto": {7: "GraphProto", 20: "TrainingInfoProto", 25: "FunctionProto"},
    "TrainingInfoProto": {1: "GraphProto", 2: "GraphProto"},
    "FunctionProto": {7: "NodeProto", 11: "AttributeProto"},
    "GraphProto": {1: "NodeProto", 5: "TensorProto", 15: "SparseTensorProto"},
    "NodeProto": {5: "AttributeProto"},
    "AttributeProto": {
        5: "TensorProto",
        6: "GraphProto",
        10: "TensorProto",
        11: "GraphProto",
        22: "SparseTensorProto",
        23: "SparseTensorProto",
    },
    "SparseTensorProto": {1: "TensorProto", 2: "TensorProto"},
    "TensorProto": {13: "StringStringEntryProto"},  # external_data: key/value pairs, "location" among them
    "StringStringEntryProto": {},  # key = 1, value = 2 (strings)
}
LOCATION_KEY = b"location"  # the key of the external-data entry naming the file, as its bytes stand in the message
MAX_NESTING = 64  # messages inside messages (graphs in graphs); protobuf's own default recursion limit is 100
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class MalformedProtobuf(ValueError):
    """The bytes are not a protobuf message (truncated, a bad wire type, nested too deep)."""


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise MalformedProtobuf(f"varint runs past byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def length_delimited_fields(buf, start: int, end: int):
    """(field number, start, end) of every length-delimited field of the message in ``buf[start:end]``."""
    pos = start
    while pos < end:
        key = buf[pos]  # keys and lengths are mostly one byte: read those inline, the rest with read_varint
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == LENGTH_DELIMITED:
            if pos < end and buf[pos] < 0x80:
                length, pos = buf[pos], pos + 1
            else:
                length, pos = read_varint(buf, pos, end)
            if pos + length > end:
                raise MalformedProtobuf(f"field {number} at byte {pos} runs past its message")
            yield number, pos, pos + length
            pos += length
        elif wire_type == VARINT:
            _, pos = read_varint(buf, pos, end)
        elif wire_type == FIXED64:
            pos += 8
        elif wire_type == FIXED32:
            pos += 4
        else:  # 3 and 4 (groups) do not occur in onnx.proto; anything else is not protobuf
            raise MalformedProtobuf(f"wire type {wire_type} at byte {pos}")
        if pos > end:
            raise MalformedProtobuf(f"field {number} runs past its message")


def collect_locations(buf, start: int, end: int, message: str, depth: int, found: list[str]) -> None:
    """Append to ``found`` the ``location`` of every external-data entry inside ``message`` at ``buf[start:end]``."""
    if depth > MAX_NESTING:
        raise MalformedProtobuf(f"messages nested more than {MAX_NESTING} deep")
    if message == "StringStringEntryProto":
        fields = length_delimited_fields(buf, start, end)
        # the last one wins; bytes that are not UTF-8 stay distinct (lone surrogates, which no manifest path holds),
        # where "replace" would let b"w\xff" pass as a manifest's "w\ufffd" while ONNX Runtime opens the raw bytes
        entry = {number: bytes(buf[s:e]).decode("utf-8", "surrogateescape") for number, s, e in fields}
        if entry.get(1) == "location":
            found.append(entry.get(2, ""))
        return
    inner = ONNX_MESSAGES[message]
    for number, s, e in length_delimited_fields(buf, start, end):
        if number in inner and buf.find(LOCATION_KEY, s, e) != -1:  # a message without those bytes names no file
            collect_locations(buf, s, e, inner[number], depth + 1, found)


def external_locations(path: str | os.PathLike) -> list[str]:
    """Every external-data ``location`` the ONNX file at ``path`` names, in file order (repeats kept); raises
    ``MalformedProtobuf`` for bytes that are not a protobuf message."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:  # pages of skipped weights are never read
            found: list[str] = []
            collect_locations(buf, 0, len(buf), "ModelProto", 0, found)
            return found
