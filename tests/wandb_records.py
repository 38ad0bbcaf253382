"""Test helper: the records of an offline wandb run file (run-<id>.wandb): the leveldb log format wandb writes (a 7-byte
file header, 32 KiB blocks, each record as checksum, length, type + data, split across blocks as
first/middle/last), each record a wandb_internal_pb2.Record."""

import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data, pos, out, pending = Path(path).read_bytes(), HEADER, [], b""
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    while pos + HEADER <= len(data):
        space = BLOCK - pos % BLOCK
        if space < HEADER:
            pos += space
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        if pos + length > len(data):  # a run killed mid-write: the complete records before it
            break
        chunk, pos = data[pos : pos + length], pos + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
        elif kind == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
    return out


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in raw_records(path):
        r = pb.Record()
        r.ParseFromString(raw)
        yield r
