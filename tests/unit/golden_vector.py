#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The golden vector of docs/format.md section 5, built from the document's rules alone (an
independent writer): prints the bytes as the C array of tests/unit/test_format.c (--c), as the
hex dump of format.md (--dump, default) or raw (--raw FILE, e.g. the fuzz corpus seeds
tests/fuzz/corpus/{load,dump}/golden-vector.bin). test_format.c checks that libcpr's writer
produces exactly these bytes and that its reader accepts them."""
import struct
import sys

CONFIG = b'{"producer":"golden","mode":"normal"}'
SCHEMA = (b'{"schema":1,"sections":['
          b'{"name":"dev","kind":"full","version":1,"min_version":1,'
          b'"fields":[{"name":"reg","type":"u32","size":4,"count":1}],"subsections":[]},'
          b'{"name":"ram","kind":"progressive","version":1,"min_version":1}]}')


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def record(rtype, payload, flags=0):
    head = struct.pack("<QBBH", len(payload), rtype, flags, 0)
    return head + struct.pack("<I", crc32c(head)) + payload + struct.pack("<I", crc32c(payload))


def section(sid, instance, version, name):
    return struct.pack("<IIII", sid, instance, version, len(name)) + name


def golden():
    head = b"\x89CPR\r\n\x1a\n" + struct.pack("<HH", 1, 0)
    out = head + struct.pack("<I", crc32c(head))
    recs = [
        record(0x01, CONFIG),
        record(0x02, SCHEMA),
        record(0x10, section(0, 0, 1, b"dev") + struct.pack("<I", 0x11223344) + b"\x00"),
        record(0x11, section(1, 0, 1, b"ram")),
        record(0x12, struct.pack("<I", 1) + b"\xaa"),
        record(0x13, struct.pack("<I", 1)),
    ]
    for r in recs:
        out += r
    eos = struct.pack("<QQQ", len(recs), 2, len(out))
    return out + record(0x7F, eos)


def main():
    data = golden()
    mode = sys.argv[1] if len(sys.argv) > 1 else "--dump"
    if mode == "--raw":
        with open(sys.argv[2], "wb") as f:
            f.write(data)
    elif mode == "--c":
        for i in range(0, len(data), 16):
            print("    " + " ".join("0x%02x," % b for b in data[i:i + 16]))
    else:
        for i in range(0, len(data), 16):
            print("%03x  %s" % (i, " ".join("%02x" % b for b in data[i:i + 16])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
