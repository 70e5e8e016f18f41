"""The body of the request being read: its bytes and its limits, sans-IO.

Per request: its size (413 past `max_body_bytes`) and, for a chunked body, how many pieces it
came in (400 for a flood of tiny chunks). Together: the bytes all connections hold
(`ServerState.body_bytes`, 503 past `max_inflight_body_bytes`), which this object adds its
share to and gives back when its request is done or dropped. The connection (connection.py)
feeds it pieces and answers the `Refusal`s it returns.
"""

from __future__ import annotations

from routercore.http.head_rules import Refusal, body_too_large
from routercore.http.state import ServerState

# A chunked body may arrive in this many pieces, plus one per _MIN_PIECE_AVERAGE bytes: each
# chunk costs h11 a few microseconds of Python, so 1-byte chunks would multiply the cost of a
# body by thousands. Honest clients send far larger chunks (and reads are far larger).
_FREE_PIECES = 1024
_MIN_PIECE_AVERAGE = 512


class RequestBody:
    """The body being read on one connection (one request at a time)."""

    __slots__ = (
        "_max_body",
        "_max_inflight",
        "_state",
        "chunked",
        "data",
        "deadline_at",
        "held",
        "pieces",
        "size",
    )

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._max_body = state.limits.max_body_bytes
        self._max_inflight = state.limits.max_inflight_body_bytes
        # One growing buffer, not a list of pieces: a chunked body of a million 1-byte chunks
        # would otherwise cost ~35 bytes of object overhead per body byte.
        self.data: bytes | bytearray = b""
        self.size = 0
        self.held = 0  # what this body counts in state.body_bytes
        self.pieces = 0
        self.deadline_at = 0.0  # loop time; 0: no body being read
        self.chunked = False

    def reset(self, *, chunked: bool = False) -> None:
        """A new head: nothing read of its body yet."""
        self.data = b""
        self.size = 0
        self.pieces = 0
        self.deadline_at = 0.0
        self.chunked = chunked

    def room_for(self, length: int) -> Refusal | None:
        """Before reading a body of `length` bytes (0 when chunked): does the server have room?"""
        if self._state.body_bytes + length > self._max_inflight:
            return self._memory_full()
        return None

    def add(self, piece: bytes | bytearray) -> Refusal | None:
        """Count a piece against the limits and keep it; a refusal ends the request."""
        state = self._state
        size = len(piece)
        self.size += size
        if self.size > self._max_body:
            return body_too_large(self._max_body)
        state.body_bytes += size
        self.held += size
        if state.body_bytes > self._max_inflight:
            return self._memory_full()
        if self.chunked:
            self.pieces += 1
            if self.pieces > _FREE_PIECES + self.size // _MIN_PIECE_AVERAGE:
                return Refusal(
                    400,
                    "request body arrives in too many tiny chunks",
                    "body_too_fragmented",
                    f"pieces={self.pieces}",
                )
        if self.size == size:
            self.data = piece  # the whole body so far: no copy
        else:
            if type(self.data) is not bytearray:
                self.data = bytearray(self.data)
            self.data += piece
        return None

    def take(self) -> bytes:
        """The whole body, handed to its request; its share stays counted until `release`."""
        body = bytes(self.data)
        self.data = b""
        return body

    def release(self) -> None:
        """Give this body's share of `max_inflight_body_bytes` back."""
        if self.held:
            self._state.body_bytes -= self.held
            self.held = 0

    def drop(self) -> None:
        """The body being read will never be handled: free it and its share."""
        self.data = b""
        self.release()

    def _memory_full(self) -> Refusal:
        return Refusal(
            503,
            "the server holds too many request bodies",
            "body_memory_full",
            f"held={self._state.body_bytes} limit={self._max_inflight}",
            server_full=True,
        )
