"""Server-sent events split out of a byte stream cut anywhere (sans-IO, bounded).

Only what OpenAI-compatible servers send is handled: `data:` fields (several lines join with
"\\n"), comments and other fields ignored, events ended by a blank line, lines ended by "\\n"
or "\\r\\n" (a lone "\\r" is not a line end here: no OpenAI-compatible server uses it).
"""

from __future__ import annotations

from routercore.translate.common import TranslationError

# An event (or a line) still incomplete past this size is an upstream fault, not a reason to
# keep buffering: a node must never make the router hold unbounded memory for a request.
MAX_PENDING_BYTES = 8 * 1024 * 1024


class SSEDecoder:
    """Feed bytes, get the complete events' data payloads (bytes) in order. Pieces of an
    unfinished line are kept in a list, so a node dripping bytes costs linear time."""

    __slots__ = ("_data", "_data_size", "_max", "_pieces", "_pieces_size")

    def __init__(self, max_pending: int = MAX_PENDING_BYTES) -> None:
        self._pieces: list[bytes] = []  # the unfinished line
        self._pieces_size = 0
        self._data: list[bytes] = []  # the unfinished event's data lines
        self._data_size = 0
        self._max = max_pending

    def feed(self, chunk: bytes) -> list[bytes]:
        if (
            not self._pieces
            and not self._data
            and chunk.startswith(b"data: ")
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk.endswith(b"\n\n")
        ):
            return [chunk[6:-2]]  # the usual read: exactly one whole one-line event
        end = chunk.rfind(b"\n")
        if end < 0:
            if chunk:
                self._pieces.append(chunk)
                self._pieces_size += len(chunk)
                self._check_size()
            return []
        if self._pieces:
            self._pieces.append(chunk[: end + 1])
            lines = b"".join(self._pieces)[:-1]
        else:
            lines = chunk[:end]
        rest = chunk[end + 1 :]
        self._pieces = [rest] if rest else []
        self._pieces_size = len(rest)
        events: list[bytes] = []
        data = self._data
        for line in lines.split(b"\n"):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data = self._data = []
                    self._data_size = 0
            elif line.startswith(b"data:"):
                value = line[5:]
                if value.startswith(b" "):
                    value = value[1:]
                data.append(value)
                self._data_size += len(value)
        if data or rest:
            self._check_size()
        return events

    def finish(self) -> bool:
        """The body ended. An event without its closing blank line is dropped, as the SSE spec
        says (it is most likely cut); returns whether one was."""
        cut = bool(self._pieces or self._data)
        self._pieces = []
        self._pieces_size = 0
        self._data = []
        self._data_size = 0
        return cut

    def _check_size(self) -> None:
        if self._pieces_size + self._data_size > self._max:
            self.finish()
            raise TranslationError(f"upstream event larger than {self._max} bytes without an end")
