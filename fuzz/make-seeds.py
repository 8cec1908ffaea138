#!/usr/bin/env python3
"""Writes the checked-in seed corpus (fuzz/corpus/TARGET/*): one well-formed input per thing
each target should start from. Run from anywhere: fuzz/make-seeds.py. Inputs for the device
targets follow fuzz/src/lib.rs: [features le16, kicks, rounds, guest RAM from address 0]."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
EVENT_IDX = 1 << 12
QUEUE = 0x1000  # queue i's rings at i * QUEUE: descriptors +0, available +0x400, used +0x800
WRITE, NEXT, INDIRECT = 2, 1, 4


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


class Ram:
    def __init__(self):
        self.b = bytearray(0x10000)

    def put(self, addr, data):
        self.b[addr:addr + len(data)] = data

    def desc(self, q, i, addr, length, flags, nxt=0):
        self.put(q * QUEUE + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def avail(self, q, heads):
        base = q * QUEUE + 0x400
        self.put(base, struct.pack("<HH", 0, len(heads)))
        for i, h in enumerate(heads):
            self.put(base + 4 + 2 * i, struct.pack("<H", h))

    def chain(self, q, first, parts):
        """parts: (addr, len, flags); chained from descriptor `first`."""
        for k, (addr, length, flags) in enumerate(parts):
            last = k == len(parts) - 1
            self.desc(q, first + k, addr, length, flags | (0 if last else NEXT), 0 if last else first + k + 1)
        return first

    def input(self, features=EVENT_IDX, kicks=0xFF, rounds=1):
        end = max(i for i, v in enumerate(self.b) if v) + 1 if any(self.b) else 0
        return struct.pack("<HBB", features, kicks, rounds) + bytes(self.b[:end])


def balloon():
    r = Ram()  # inflate 64 PFNs, then deflate 16 of them
    r.put(0x8000, struct.pack("<64I", *range(32, 96)))
    r.chain(0, 0, [(0x8000, 256, 0)])
    r.avail(0, [0])
    r.chain(1, 0, [(0x8000, 64, 0)])
    r.avail(1, [0])
    write("balloon_queues", "inflate-deflate", r.input(kicks=0b11))
    r = Ram()  # statistics (STATS_VQ = bit 1): free memory, total memory
    r.put(0x8000, struct.pack("<HQHQ", 4, 1 << 20, 5, 1 << 20))
    r.chain(2, 0, [(0x8000, 20, 0)])
    r.avail(2, [0])
    write("balloon_queues", "stats", r.input(features=EVENT_IDX | 0b10, kicks=0b100))
    r = Ram()  # free page reporting (bit 5, with stats): two 64 KiB ranges
    r.chain(3, 0, [(0x40000, 0x10000, WRITE), (0x60000, 0x10000, WRITE)])
    r.avail(3, [0])
    write("balloon_queues", "report", r.input(features=EVENT_IDX | 0b100010, kicks=0b1000))


def block():
    def request(kind, sector, data_len, data_flags):
        r = Ram()
        r.put(0x8000, struct.pack("<IIQ", kind, 0, sector))
        parts = [(0x8000, 16, 0)]
        if data_len:
            parts.append((0x9000, data_len, data_flags))
        parts.append((0xA000, 1, WRITE))
        r.chain(0, 0, parts)
        r.avail(0, [0])
        return r
    write("block_requests", "read", request(0, 2, 1024, WRITE).input())
    r = request(1, 4, 512, 0)
    r.put(0x9000, b"ballast" * 73)
    write("block_requests", "write", r.input())
    write("block_requests", "flush", request(4, 0, 0, 0).input())
    write("block_requests", "get-id", request(8, 0, 20, WRITE).input())
    r = Ram()  # a read through an indirect table
    r.put(0x8000, struct.pack("<IIQ", 0, 0, 0))
    table = struct.pack("<QIHH", 0x8000, 16, NEXT, 1) + struct.pack("<QIHH", 0x9000, 512, WRITE | NEXT, 2) \
        + struct.pack("<QIHH", 0xA000, 1, WRITE, 0)
    r.put(0xB000, table)
    r.desc(0, 0, 0xB000, len(table), INDIRECT)
    r.avail(0, [0])
    write("block_requests", "indirect-read", r.input(features=EVENT_IDX | (1 << 13)))


def vsock():
    def header(op, src_port, dst_port, length=0):
        return struct.pack("<QQIIIHHIII", 3, 2, src_port, dst_port, length, 1, op, 0, 65536, 0)
    r = Ram()
    for i in range(4):  # rx buffers
        r.desc(0, i, 0x9000 + 0x1000 * i, 0x1000, WRITE)
    r.avail(0, [0, 1, 2, 3])
    r.put(0x8000, header(1, 5000, 1234))  # REQUEST to host port 1234
    r.put(0x8100, header(5, 5000, 1234, 5) + b"hello")  # data
    r.put(0x8200, header(4, 5000, 1234) )  # SHUTDOWN
    r.chain(1, 0, [(0x8000, 44, 0)])
    r.chain(1, 1, [(0x8100, 49, 0)])
    r.chain(1, 2, [(0x8200, 44, 0)])
    r.avail(1, [0, 1, 2])
    write("vsock_packets", "connect-send-shutdown", r.input(kicks=0b11, rounds=3))
    r = Ram()
    r.put(0x8000, header(5, 6000, 999, 3) + b"rst")  # data for no connection: a reset
    r.chain(1, 0, [(0x8000, 47, 0)])
    r.avail(1, [0])
    r.desc(0, 0, 0x9000, 0x1000, WRITE)
    r.avail(0, [0])
    write("vsock_packets", "reset", r.input(kicks=0b11))


def mmio():
    ops = []

    def w(off, val):
        ops.append(struct.pack("<BHBI", 1, off, 2, val))

    def rd(off):
        ops.append(struct.pack("<BHBI", 0, off, 2, 0))
    ram = bytearray(1024)
    for off in (0x0, 0x4, 0x8, 0x10):
        rd(off)
    w(0x70, 1)
    w(0x70, 3)
    w(0x24, 1)
    w(0x20, 1)  # VERSION_1
    w(0x70, 11)
    for q in (0, 1):
        w(0x30, q)
        rd(0x34)
        w(0x38, 16)
        w(0x80, 0x1000 * q)
        w(0x90, 0x1000 * q + 0x200)
        w(0xA0, 0x1000 * q + 0x300)
        w(0x44, 1)
    w(0x70, 15)
    rd(0x100)
    w(0x104, 4)  # the balloon's `actual`
    w(0x50, 0)
    w(0x64, 1)
    w(0x70, 0)  # reset
    write("virtio_mmio", "init-activate-reset", bytes(ram) + b"".join(ops))


def agent():
    lines = [
        {"id": 1, "type": "hello", "protocol_version": 1},
        {"id": 2, "type": "stats"},
        {"id": 3, "type": "deactivate_file", "target_pages": 1000},
        {"id": 4, "type": "deactivate_anon", "target_pages": 500, "urgent": True},
        {"id": 1, "result": {"type": "hello", "protocol_version": 1, "agent_version": "0.1.0",
                             "page_size": 4096, "capabilities": {"kernel_version": "6.1.0", "swap": True}}},
        {"id": 2, "result": {"type": "stats", "meminfo": {"mem_total_kib": 262144},
                             "psi": {"some": {"avg10": 0.5, "avg60": 0.1, "avg300": 0.0, "total": 12}}}},
        {"id": 3, "error": {"kind": "busy", "message": "one at a time"}},
    ]
    stream = b"".join(json.dumps(l).encode() + b"\n" for l in lines)
    write("agent_protocol", "session", b"\x07" + stream)
    write("agent_protocol", "long-line", b"\x40" + b"{\"id\":1,\"type\":\"" + b"x" * 5000 + b"\"}\n")


def rest():
    def req(method, path, body=None):
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
        if body is None:
            return (head + "\r\n").encode()
        b = body.encode()
        return (head + f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b
    seeds = {
        "get-vm": req("GET", "/vm"),
        "pause": req("PUT", "/vm/actions", '{"action_type": "Pause"}'),
        "resume": req("PUT", "/vm/actions", '{"action_type": "Resume"}'),
        "balloon": req("PATCH", "/balloon", '{"amount_mib": 64}'),
        "balloon-stats": req("PATCH", "/balloon/statistics", '{"stats_polling_interval_s": 2}'),
        "limit": req("PUT", "/vm/memory/limit", '{"limit_mib": 256}'),
        "limit-clear": req("PUT", "/vm/memory/limit", '{"limit_mib": null}'),
        "memory": req("GET", "/vm/memory"),
        "metrics": req("GET", "/metrics"),
        "bad-json": req("PATCH", "/balloon", '{"amount_mib": '),
        "unknown-field": req("PUT", "/vm/memory/limit", '{"limit_mib": 1, "x": 2}'),
        "two": req("GET", "/balloon") + req("GET", "/balloon/statistics"),
    }
    for name, data in seeds.items():
        write("rest_bodies", name, data)


balloon()
block()
vsock()
mmio()
agent()
rest()
