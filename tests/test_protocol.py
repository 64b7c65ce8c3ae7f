"""The wire protocol (PROTOCOL.md) from both sides, checked against the same golden frames, and the
output-marker scanner that splits a worker's stdout/stderr into per-request pieces."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from juliapool import protocol
from juliapool.paths import julia_source_dir
from juliapool.protocol import END_SEQ, Frame, FrameReader, MarkerScanner, decode_body, encode_frame

GOLDEN_FILE = Path(__file__).with_name("golden_frames.txt")

# What each golden frame holds: kind, request id, fields (str fields are UTF-8 on the wire).
GOLDEN: Dict[str, Tuple[str, int, List[object]]] = {
    "exec_unicode": ("E", 7, ["session:notebook-α", 'println("héllo, 世界 🎉")',
                              "0123456789abcdef0123456789abcdef", "In[1]", "p"]),
    "done_bundle": ("O", 7, ["ok", "", "", "", "0", "text/plain", "3", "text/html", "<b>3</b> → ✓"]),
    "done_error": ("O", 8, ["error", "ErrorException", "Test error",
                            "ERROR: Test error\nStacktrace:\n [1] error(::String) at ./error.jl:33\n", "0"]),
    "hello": ("H", 0, ["1.5.3", "12345"]),
    "ping_no_fields": ("P", 1, []),
    "empty_fields_max_id": ("R", 0xFFFFFFFF, ["", "", ""]),
    "display_binary": ("M", 300, ["00000001", "application/octet-stream",
                                  bytes([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, 0x0A, 0x0D])]),
}


def _raw(field: object) -> bytes:
    return field.encode("utf-8") if isinstance(field, str) else bytes(field)  # type: ignore[arg-type]


def load_golden() -> Dict[str, bytes]:
    frames = {}
    for line in GOLDEN_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, hexdata = line.split(":", 1)
            frames[name.strip()] = bytes.fromhex(hexdata.strip())
    return frames


GOLDEN_BYTES = load_golden()
NAMES = sorted(GOLDEN)


def test_golden_file_describes_every_frame():
    assert set(GOLDEN_BYTES) == set(GOLDEN)


# ---- Python side ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_python_encodes_golden(name):
    kind, rid, fields = GOLDEN[name]
    assert encode_frame(kind, rid, fields) == GOLDEN_BYTES[name]
    # str and bytes fields are the same thing on the wire
    assert encode_frame(kind, rid, [_raw(f) for f in fields]) == GOLDEN_BYTES[name]


@pytest.mark.parametrize("name", NAMES)
def test_python_decodes_golden(name):
    kind, rid, fields = GOLDEN[name]
    data = GOLDEN_BYTES[name]
    assert int.from_bytes(data[:4], "little") == len(data) - 4
    frame = decode_body(data[4:])
    assert frame == Frame(kind, rid, tuple(_raw(f) for f in fields))


def test_frame_reader_reassembles_a_stream_fed_byte_by_byte():
    stream = b"".join(GOLDEN_BYTES[n] for n in NAMES)
    reader = FrameReader()
    got = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
    assert [(f.kind, f.id, f.fields) for f in got] == [
        (GOLDEN[n][0], GOLDEN[n][1], tuple(_raw(f) for f in GOLDEN[n][2])) for n in NAMES]


def test_frame_reader_returns_frames_that_arrive_together():
    stream = b"".join(GOLDEN_BYTES[n] for n in NAMES)
    reader = FrameReader()
    assert [f.kind for f in reader.feed(stream + GOLDEN_BYTES["hello"][:3])] == [GOLDEN[n][0] for n in NAMES]
    assert [f.kind for f in reader.feed(GOLDEN_BYTES["hello"][3:])] == ["H"]


# The hello body is 23 bytes: kind and id (5), then two fields of 4 + 5 bytes each.
@pytest.mark.parametrize("keep", [0, 3, 7, 13, 17, 18, 22])
def test_decode_rejects_truncated_bodies(keep):
    body = GOLDEN_BYTES["hello"][4:]
    with pytest.raises(ValueError):
        decode_body(body[:keep])


def test_bundle_from_fields_pairs_mimes_with_data():
    frame = decode_body(GOLDEN_BYTES["done_bundle"][4:])
    assert protocol.bundle_from_fields(frame.fields[5:]) == {"text/plain": "3", "text/html": "<b>3</b> → ✓"}


def test_nonces_are_32_hex_digits_and_differ():
    nonces = {protocol.new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) == protocol.NONCE_LEN == 32 and int(n, 16) >= 0 for n in nonces)


# ---- Julia side: julia/protocol.jl included into a fresh module ----------------------------------

JULIA_SCRIPT = r"""
module P
include(ARGS[1])
end
unhex(t) = t == "-" ? UInt8[] : hex2bytes(t)
hexs(fields) = isempty(fields) ? "" : join([isempty(f) ? "-" : bytes2hex(f) for f in fields], " ")
stream = IOBuffer()
names = String[]
for line in eachline(ARGS[2])
    words = split(line, " ")
    name, kind, id, golden = words[1], words[2][1], parse(UInt32, words[3]), hex2bytes(words[4])
    fields = [unhex(String(w)) for w in words[5:end]]
    println("ENC ", name, " ", bytes2hex(P.encode_frame(kind, id, fields)))
    println("ENCSTR ", name, " ", bytes2hex(P.encode_frame(kind, id, [String(copy(f)) for f in fields])))
    f = P.decode_body(golden[5:end])
    println("DEC ", name, " ", f.kind, " ", Int(f.id), " ", length(f.fields), " ", hexs(f.fields))
    push!(names, name)
    write(stream, golden)
end
seekstart(stream)
for name in names
    f = P.read_frame(stream)
    println("READ ", name, " ", f.kind, " ", Int(f.id), " ", length(f.fields), " ", hexs(f.fields))
end
println("READ-END ", P.read_frame(stream) === nothing)
truncated = P.encode_frame('H', 0, ["1.5.3"])
try
    P.read_frame(IOBuffer(truncated[1:end-2]))
    println("TRUNCATED accepted")
catch e
    println("TRUNCATED rejected")
end
"""


def _hexs(fields: List[object]) -> str:
    return " ".join(_raw(f).hex() or "-" for f in fields)


@pytest.fixture(scope="module")
def julia_protocol(julia_path, tmp_path_factory) -> Dict[str, str]:
    """Runs Julia once over every golden frame; maps 'KIND name' -> the rest of Julia's output line."""
    cases = tmp_path_factory.mktemp("protocol") / "cases.txt"
    lines = []
    for name in NAMES:
        kind, rid, fields = GOLDEN[name]
        lines.append(f"{name} {kind} {rid} {GOLDEN_BYTES[name].hex()} {_hexs(fields)}".rstrip())
    cases.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [julia_path, "--startup-file=no", "--history-file=no", "--color=no", "-e", JULIA_SCRIPT,
         str(julia_source_dir() / "protocol.jl"), str(cases)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        what, name, *rest = line.split(" ", 2)
        out[f"{what} {name}"] = rest[0] if rest else ""
    return out


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", NAMES)
def test_julia_encodes_golden(julia_protocol, name):
    assert julia_protocol[f"ENC {name}"] == GOLDEN_BYTES[name].hex()
    # the worker passes String fields: the same bytes on the wire
    assert julia_protocol[f"ENCSTR {name}"] == GOLDEN_BYTES[name].hex()


def _expected_decoded(name: str) -> str:
    kind, rid, fields = GOLDEN[name]
    return f"{kind} {rid} {len(fields)} {_hexs(fields)}".rstrip() if fields else f"{kind} {rid} 0 "


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", NAMES)
def test_julia_decodes_golden(julia_protocol, name):
    assert julia_protocol[f"DEC {name}"] == _expected_decoded(name)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", NAMES)
def test_julia_reads_golden_frames_from_a_stream(julia_protocol, name):
    assert julia_protocol[f"READ {name}"] == _expected_decoded(name)


@pytest.mark.timeout(150)
def test_julia_read_frame_ends_cleanly_and_rejects_truncation(julia_protocol):
    assert julia_protocol["READ-END true"] == ""
    assert julia_protocol["TRUNCATED rejected"] == ""


# ---- MarkerScanner ---------------------------------------------------------------------------------

NONCE = "0123456789abcdef" * 2
NB = NONCE.encode()
DISPLAY_SEQ = b"00000001"


def scan(chunks: List[bytes], nonce: str = NONCE) -> Tuple[bytes, List[bytes], bytes]:
    """Feed `chunks`; returns (user output joined, marker seqs in order, what flush() gives back)."""
    scanner = MarkerScanner(nonce)
    out, seqs = [], []
    for chunk in chunks:
        for item in scanner.feed(chunk):
            seq = protocol.find_marker_seq(item)
            if seq is None:
                assert isinstance(item, bytes) and item, f"empty or odd item {item!r}"
                out.append(item)
            else:
                seqs.append(seq)
    return b"".join(out), seqs, scanner.flush()


def test_marker_in_one_chunk_is_cut_out():
    assert scan([b"hello\n" + NB + END_SEQ]) == (b"hello\n", [END_SEQ], b"")


def test_marker_split_across_two_chunks_at_every_position():
    data = b"before\n" + NB + END_SEQ + b"after"
    for i in range(len(data) + 1):
        assert scan([data[:i], data[i:]]) == (b"before\nafter", [END_SEQ], b""), f"split at {i}"


def test_two_markers_split_across_three_chunks_at_every_pair_of_positions():
    data = b"a" + NB + DISPLAY_SEQ + b"bc" + NB + END_SEQ
    for i, j in itertools.combinations(range(len(data) + 1), 2):
        got = scan([data[:i], data[i:j], data[j:]])
        assert got == (b"abc", [DISPLAY_SEQ, END_SEQ], b""), f"split at {i}, {j}"


def test_marker_fed_byte_by_byte():
    data = b"x" * 50 + NB + DISPLAY_SEQ + b"y" * 50 + NB + END_SEQ
    assert scan([data[i : i + 1] for i in range(len(data))]) == (b"x" * 50 + b"y" * 50, [DISPLAY_SEQ, END_SEQ], b"")


@pytest.mark.parametrize("k", range(1, len(NONCE)))
def test_nonce_prefix_at_chunk_end_that_is_not_a_marker_is_output(k):
    scanner = MarkerScanner(NONCE)
    first = scanner.feed(b"abc" + NB[:k])
    assert first == [b"abc"], "a possible marker start is held back, the rest goes out"
    second = scanner.feed(b"zz\n")
    assert b"".join(second) == NB[:k] + b"zz\n", "the held bytes come out once they are no marker"
    assert scanner.flush() == b""


def test_whole_nonce_with_seq_split_waits_for_the_seq():
    scanner = MarkerScanner(NONCE)
    assert scanner.feed(b"x" + NB + b"fff") == [b"x"]
    assert scanner.feed(b"fffff") == [(END_SEQ,)]


def test_repeated_nonce_prefixes_before_a_marker_are_output():
    data = NB[:5] + NB[:5] + b"-" + NB[:31] + NB + END_SEQ
    for i in range(len(data) + 1):
        assert scan([data[:i], data[i:]]) == (NB[:5] + NB[:5] + b"-" + NB[:31], [END_SEQ], b""), f"split at {i}"


def test_marker_of_another_nonce_is_plain_output():
    other = b"f" * 32 + END_SEQ + b"<<<END_EXECUTION>>>" + b"0123456789abcdef" + END_SEQ
    assert scan([other]) == (other, [], b"")


def test_flush_gives_back_a_held_prefix_when_the_worker_died():
    scanner = MarkerScanner(NONCE)
    assert scanner.feed(b"last words " + NB[:20]) == [b"last words "]
    assert scanner.flush() == NB[:20]
    assert scanner.flush() == b""


def test_binary_output_passes_through_unchanged():
    data = bytes(range(256)) * 4 + NB[:7]
    assert scan([data[:300], data[300:], b"!"]) == (data + b"!", [], b"")
