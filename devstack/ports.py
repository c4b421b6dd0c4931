"""Port checks and free-port allocation on 127.0.0.1."""

from __future__ import annotations

import collections
import socket

from devstack.errors import StackError

# Blocks handed out lately by this process: a program started on a block binds it only a
# moment later, and twenty callers started in a row must not be given the same block.
_recent: collections.deque[tuple[int, int]] = collections.deque(maxlen=1024)


def is_free(port: int, kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            # Servers set SO_REUSEADDR; without it a port with connections in TIME_WAIT
            # after a restart would look taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free(port: int, what: str, setting: str, udp: bool = False) -> None:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    if not is_free(port, kind):
        proto = "UDP" if udp else "TCP"
        raise StackError(
            f"port {port}/{proto} for {what} is already in use on 127.0.0.1; "
            f"stop whatever holds it or choose another port with {setting}=<port>"
        )


def free_block(count: int, start: int = 20000, end: int = 60000, step: int = 10) -> int:
    """First base port such that base..base+count-1 are free for both TCP and UDP.

    Used by tests so that their stack never collides with `make up`'s."""
    import random

    bases = list(range(start, end - count, step))
    random.shuffle(bases)

    def recent(base: int) -> bool:
        return any(lo < base + count and base < hi for lo, hi in _recent)

    # blocks not handed out lately first; a small range may have to reuse one
    for base in [b for b in bases if not recent(b)] + [b for b in bases if recent(b)]:
        ports = range(base, base + count)
        if all(is_free(p) and is_free(p, socket.SOCK_DGRAM) for p in ports):
            _recent.append((base, base + count))
            return base
    raise StackError(f"no block of {count} free ports between {start} and {end}")
