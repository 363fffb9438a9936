#!/usr/bin/env python3
"""Opens N keep-alive connections to a proxy, sends one cached request on each (so every
connection has served a request and holds whatever state that leaves), keeps them all open
and idle, and prints the proxy's RSS before and with them open.

usage: idle_connections.py PROXY_HOST:PORT PROXY_PID URL [N]
"""
import asyncio
import sys


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_one(host, port, url, host_header):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {url} HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    await reader.readexactly(length)
    return reader, writer


async def main():
    proxy, pid, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
    host, port = proxy.rsplit(":", 1)
    host_header = url.split("/")[2]
    before = rss_kib(pid)
    connections = []
    batch = 500
    for start in range(0, count, batch):
        connections += await asyncio.gather(
            *(open_one(host, int(port), url, host_header) for _ in range(min(batch, count - start)))
        )
    await asyncio.sleep(2)
    during = rss_kib(pid)
    print(f"IDLE connections={len(connections)} rss_before_kib={before} rss_with_kib={during} "
          f"per_connection_bytes={(during - before) * 1024 // len(connections)}")
    for _, writer in connections:
        writer.close()


asyncio.run(main())
