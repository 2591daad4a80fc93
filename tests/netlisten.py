"""Listening TCP sockets of a process tree, read from /proc (no extra tools)."""

from __future__ import annotations

import os

from riverflink.pipelines.broker import descendants


def _addr(hex_addr: str) -> str:
    host, port = hex_addr.split(":")
    if len(host) == 8:
        ip = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
    else:
        words = [host[i : i + 8] for i in range(0, 32, 8)]
        raw = b"".join(bytes.fromhex(w)[::-1] for w in words)
        ip = ":".join(raw[i : i + 2].hex() for i in range(0, 16, 2))
        ip = {"0000:0000:0000:0000:0000:0000:0000:0000": "::",
              "0000:0000:0000:0000:0000:0000:0000:0001": "::1"}.get(ip, ip)
        if ip.startswith("0000:0000:0000:0000:0000:ffff:"):
            tail = raw[12:]
            ip = ".".join(str(b) for b in tail)
    return f"{ip}:{int(port, 16)}"


def listening(pid: int) -> dict[int, list[str]]:
    """pid -> ["address:port", ...] for every LISTEN socket of ``pid`` and its descendants."""
    inodes: dict = {}
    for p in descendants(pid):
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    target = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = p
        except OSError:
            continue
    out: dict = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                out.setdefault(inodes[f[9]], []).append(_addr(f[1]))
    return out


def flink_rest_port(pid: int) -> int | None:
    """The port of the Flink REST endpoint among the listening sockets of ``pid``'s tree, if up."""
    from riverflink.pipelines import flink_rest

    for addrs in listening(pid).values():
        for a in addrs:
            port = int(a.rsplit(":", 1)[1])
            try:
                if "flink-version" in flink_rest.config(f"127.0.0.1:{port}", timeout=2):
                    return port
            except Exception:  # noqa: BLE001 - other sockets (py4j, gRPC) do not speak HTTP
                continue
    return None
