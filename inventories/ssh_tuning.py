"""Turn off Nagle's algorithm on every paramiko SSH socket pyinfra opens.

pyinfra sends one small request per remote command and waits for the answer; with Nagle on, each
round trip stalls on the peer's delayed ACK (measured here: ~44 ms per command, ~2 ms with TCP_NODELAY).
Neither pyinfra nor paramiko sets the option, so the inventory files (loaded before any connection)
install it once via `enable()`.
"""

from __future__ import annotations

import socket
from typing import Any

import paramiko.transport

_MARK = "_spectra_tcp_nodelay"


def enable() -> None:
    transport_class: Any = paramiko.transport.Transport
    if getattr(transport_class, _MARK, False):
        return
    original_init = transport_class.__init__

    def init_with_nodelay(self: Any, sock: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        original_init(self, sock, *args, **kwargs)

    transport_class.__init__ = init_with_nodelay
    setattr(transport_class, _MARK, True)
