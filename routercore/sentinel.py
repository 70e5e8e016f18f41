"""The one sentinel style: a named singleton compared with `is` and shown by its name.

`END` lives here because both HTTP parsers emit it with the same meaning, as h11's
EndOfMessage serves both directions: `http.wire` when a request's body is complete, the
upstream response parser when a node's response is. Sentinels only one module uses stay in
that module (`http.wire.NEED_DATA`, ...), made with the same class.
"""

from __future__ import annotations


class Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


END = Sentinel("END")  # a message is complete (its whole body was delivered)
