"""The juliapool wire format, Python side (see PROTOCOL.md; Julia twin: julia/protocol.jl).

    frame = u32 body_length | body        body = u8 kind | u32 request_id | field*
    field = u32 length | bytes            (all integers little-endian)

Also the output-marker scanner that splits a worker's stdout/stderr into per-request pieces.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Dict, Iterable, List, Optional, Tuple, Union

PROTOCOL_VERSION = "1"


class Request(str, Enum):
    """Kinds of frames Python sends (one letter on the wire; Julia's twin: `julia/protocol.jl`)."""

    EXEC = "E"  # module, code, nonce, filename, flags, [history] -> output, DISPLAY*, INPUT*, DONE
    COMPLETE = "C"  # module, code, cursor                      -> RESULT(start, stop, match*)
    INSPECT = "I"  # module, code, cursor, detail               -> RESULT(found, (mime, data)*)
    IS_COMPLETE = "K"  # code                                   -> RESULT(status, indent)
    INPUT = "N"  # text: the answer to an INPUT event
    DROP = "D"  # module: forget a session module               -> RESULT()
    PING = "P"  #                                               -> RESULT()
    COLLECT = "G"  # full collections, on the worker's own task -> RESULT(live bytes)
    QUIT = "Q"  # exit(0) after flushing


class Reply(str, Enum):
    """Kinds of frames the worker sends."""

    HELLO = "H"  # julia version, pid: ready for requests
    DONE = "O"  # status, ename, evalue, traceback, retire, (mime, data)*: end of an EXEC
    DISPLAY = "M"  # seq, (mime, data)*: display() during an EXEC
    DISPLAY_EVENT = "U"  # seq, action, argument, (mime, data)*: IJulia's clear_output, display ids
    INPUT = "N"  # prompt, password: the code reads stdin
    RESULT = "R"  # the answer to any other request


# Module names in EXEC and the other requests (the worker's `module_for`).
FRESH_MODULE = ""  # a new module for this call only
MAIN_MODULE = "Main"  # Julia's own Main (preloading)
SESSION_PREFIX = "session:"


def session_module(key: str) -> str:
    """The persistent module of the session `key`."""
    return SESSION_PREFIX + key


@dataclass(frozen=True)
class ExecOptions:
    """How the worker runs an EXEC request; `flags()` is its wire form (PROTOCOL.md)."""

    print_errors: bool = False  # p: print an uncaught error to stderr as `julia -e` does
    notebook: bool = False  # k: a notebook cell (?help, ;shell, ]pkg, display to the front end)
    soft_scope: bool = False  # s: the REPL's soft scope
    want_result: bool = False  # r: reply with the last value's MIME bundle
    allow_input: bool = False  # i: stdin reads become INPUT events (with notebook)
    reset: bool = False  # z: start from the worker's own process state and leave it so (Session.reset)

    def flags(self) -> str:
        letters = (("p", self.print_errors), ("k", self.notebook), ("s", self.soft_scope),
                   ("r", self.want_result), ("i", self.allow_input), ("z", self.reset))
        return "".join(letter for letter, on in letters if on)


PLAIN = ExecOptions(print_errors=True)  # `julia -e` semantics: plain calls and Session.execute
QUIET = ExecOptions()  # preloading and warm-up in Main: errors come back, nothing is printed


def cell_options(soft_scope: bool = True, want_result: bool = True, allow_input: bool = False) -> ExecOptions:
    return ExecOptions(notebook=True, soft_scope=soft_scope, want_result=want_result, allow_input=allow_input)


@dataclass(frozen=True)
class Done:
    """The fields of a DONE frame."""

    status: str
    ename: str
    evalue: str
    traceback: str
    retire: str  # why the worker cannot serve another caller ("" = it can; PROTOCOL.md "Retire reasons")
    result: Dict[str, str]

    @classmethod
    def from_frame(cls, frame: "Frame") -> "Done":
        status, ename, evalue, traceback, retire = frame.texts()[:5]
        return cls(status, ename, evalue, traceback, retire, bundle_from_fields(frame.fields[5:]))
END_SEQ = b"ffffffff"
SEQ_LEN = 8
NONCE_LEN = 32

_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<BI")

Field = Union[bytes, str]


@dataclass(frozen=True)
class Frame:
    kind: str
    id: int
    fields: Tuple[bytes, ...]

    def text(self, i: int) -> str:
        return self.fields[i].decode("utf-8", errors="replace")

    def texts(self, start: int = 0) -> List[str]:
        return [f.decode("utf-8", errors="replace") for f in self.fields[start:]]


def encode_frame(kind: Union[Request, Reply, str], request_id: int, fields: Iterable[Field] = ()) -> bytes:
    parts = [_HEAD.pack(ord(kind.value if isinstance(kind, Enum) else kind), request_id)]
    for field in fields:
        data = field.encode("utf-8") if isinstance(field, str) else bytes(field)
        parts.append(_U32.pack(len(data)))
        parts.append(data)
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


def decode_body(body: bytes) -> Frame:
    if len(body) < _HEAD.size:
        raise ValueError("juliapool protocol: frame body too short")
    kind, request_id = _HEAD.unpack_from(body)
    fields = []
    pos = _HEAD.size
    while pos < len(body):
        if pos + 4 > len(body):
            raise ValueError("juliapool protocol: truncated field length")
        (n,) = _U32.unpack_from(body, pos)
        pos += 4
        if pos + n > len(body):
            raise ValueError("juliapool protocol: truncated field")
        fields.append(body[pos : pos + n])
        pos += n
    return Frame(chr(kind), request_id, tuple(fields))


class FrameReader:
    """Reassembles frames from the chunks a non-blocking read returns."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= 4:
            (n,) = _U32.unpack_from(self._buf)
            if len(self._buf) < 4 + n:
                break
            frames.append(decode_body(bytes(self._buf[4 : 4 + n])))
            del self._buf[: 4 + n]
        return frames


def bundle_from_fields(fields: Iterable[bytes]) -> dict:
    """Alternating mime/data fields -> {mime: data}."""
    items = [f.decode("utf-8", errors="replace") for f in fields]
    return dict(zip(items[0::2], items[1::2]))


def new_nonce() -> str:
    return secrets.token_hex(NONCE_LEN // 2)


class MarkerScanner:
    """Cuts one output stream at the markers `nonce + seq` (PROTOCOL.md, "Output markers").

    `feed` returns a list of items: bytes of user output, or a marker's seq (bytes). Bytes that
    could be the start of a marker split across reads are held back until the next read decides.
    """

    def __init__(self, nonce: str) -> None:
        self._nonce = nonce.encode("ascii")
        self._marker_len = len(self._nonce) + SEQ_LEN
        self._held = b""

    def feed(self, data: bytes) -> List[Union[bytes, Tuple[bytes]]]:
        buf = self._held + data
        items: List[Union[bytes, Tuple[bytes]]] = []
        start = 0
        while True:
            at = buf.find(self._nonce, start)
            if at < 0 or at + self._marker_len > len(buf):
                break
            if at > start:
                items.append(buf[start:at])
            items.append((buf[at + len(self._nonce) : at + self._marker_len],))
            start = at + self._marker_len
        keep = self._partial_marker_at(buf, start)
        if keep > start:
            items.append(buf[start:keep])
        self._held = buf[keep:]
        return items

    def _partial_marker_at(self, buf: bytes, start: int) -> int:
        """Index from which `buf` may hold an incomplete marker (len(buf) if none)."""
        at = buf.find(self._nonce, start)
        if at >= 0:
            return at  # whole nonce, seq not complete yet
        for n in range(min(len(self._nonce) - 1, len(buf) - start), 0, -1):
            if self._nonce.startswith(buf[len(buf) - n :]):
                return len(buf) - n
        return len(buf)

    def flush(self) -> bytes:
        """What is held back, when no more data will come (the worker died)."""
        held, self._held = self._held, b""
        return held


def find_marker_seq(item: Union[bytes, Tuple[bytes]]) -> Optional[bytes]:
    """The seq of a marker item from `MarkerScanner.feed`, None for output bytes."""
    return item[0] if isinstance(item, tuple) else None
