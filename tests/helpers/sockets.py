"""What a process tree listens on: its listening TCP sockets and bound UDP sockets, read with psutil."""

from __future__ import annotations

import socket
import time

import psutil

LOOPBACK = {"127.0.0.1", "::1"}


def process_tree(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket and bound UDP socket of these processes."""
    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.pid in pids and c.laddr and (c.status == psutil.CONN_LISTEN or c.type == socket.SOCK_DGRAM):
            out.append((c.pid, c.laddr.ip, c.laddr.port))
    return out


def sockets_over(pid: int, seconds: float) -> list[tuple[int, str, int]]:
    """The listening sockets of pid's tree, sampled for a while (servers open more as they start)."""
    seen: set[tuple[int, str, int]] = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen |= set(listening(process_tree(pid)))
        time.sleep(0.5)
    return sorted(seen)
