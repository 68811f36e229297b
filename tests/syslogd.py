"""A syslog daemon's end of a unix datagram socket, for tests: what nvhook sent there."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

# <PRI>Mmm dd hh:mm:ss nvhook[pid]: message, as syslog(3) sends it to /dev/log.
LINE = re.compile(r"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d nvhook\[(\d+)\]: (.*)", re.S)


@dataclass(frozen=True)
class Datagram:
    facility: int
    severity: int
    pid: int
    text: str


class Syslog:
    """A syslog daemon's end of the socket: a bound datagram socket, read without waiting.
    The hook has exited before it is read, so what it sent is already queued."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()

    def raw(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(1 << 16))
            except BlockingIOError:
                return out

    def lines(self) -> list[Datagram]:
        out = []
        for data in self.raw():
            m = LINE.fullmatch(data.decode("utf-8"))
            assert m, data
            pri = int(m.group(1))
            out.append(Datagram(pri >> 3, pri & 7, int(m.group(2)), m.group(3)))
        return out

    def fill(self) -> int:
        """Fill the socket's receive queue, as a daemon that stopped reading would."""
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sent = 0
        try:
            while True:
                sender.sendto(b"x" * 512, socket.MSG_DONTWAIT, self.sock.getsockname())
                sent += 1
        except BlockingIOError:
            return sent
        finally:
            sender.close()
