"""Whether an MPEG program stream (.mpg, .vob) or transport stream (.ts, .m2ts) stops inside
a packet: the mark of a cut copy.

These containers list no length of their own: a player estimates one from the last timestamps
it finds, so a cut file reads as a complete, shorter one. Their framing gives the cut away: a
TS file is whole 188-byte packets (192 with a timecode prefix, 204 with parity), and every PS
pack and every PES packet states its length. An intact file ends on a packet's last byte; a
file cut at a random byte almost never does. (A TS cut exactly on a packet boundary inside a
video PES of unstated length is the one cut its bytes cannot show.)
"""

from __future__ import annotations

from pathlib import Path

PROGRAM, TRANSPORT = "mpeg", "mpegts"  # libavformat's names for the two containers
_TAIL = 256 * 1024  # bytes read from the end: many packets of every stream, in any file
_SYNC = 0x47
_START = b"\x00\x00\x01"
_PACK, _END = 0xBA, 0xB9


def stops_mid_packet(path: Path, container: str) -> bool:
    """True when `path` (libavformat format `container`) ends inside a packet; False when it
    ends on a whole one or its framing cannot be read (then it is not called cut)."""
    if container not in (PROGRAM, TRANSPORT):
        return False
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1024)
        f.seek(max(0, size - _TAIL))
        tail = f.read()
    if container == TRANSPORT:
        return _ts_cut(head, tail, size)
    return _ps_cut(tail)


# --- transport stream -------------------------------------------------------------------------


def _ts_cut(head: bytes, tail: bytes, size: int) -> bool:
    layout = _ts_layout(head)
    if layout is None:
        return False
    packet, prefix = layout
    if size % packet:
        return True  # the last packet is partial
    return _pes_short(tail[_aligned(tail, size, packet) :], packet, prefix)


def _ts_layout(head: bytes) -> tuple[int, int] | None:
    """(packet size, bytes before the sync byte) from the file's first packets."""
    for packet, prefix in ((188, 0), (192, 4), (204, 0)):
        syncs = range(prefix, min(len(head), prefix + 3 * packet), packet)
        if len(syncs) >= 2 and all(head[i] == _SYNC for i in syncs):
            return packet, prefix
    return None


def _aligned(tail: bytes, size: int, packet: int) -> int:
    """Offset in `tail` (the file's last bytes) of the first packet that starts in it."""
    return (-(size - len(tail))) % packet


def _pes_short(data: bytes, packet: int, prefix: int) -> bool:
    """Whether some stream's last PES packet states a length that its TS packets fall short of.

    PES packets that start before `data` are not judged (their start is not read)."""
    want: dict[int, int] = {}  # PID -> PES bytes still missing (0: length not stated)
    for at in range(0, len(data) - packet + 1, packet):
        ts = data[at + prefix : at + prefix + 188]
        if ts[0] != _SYNC:
            return False  # not where a packet should be: framing unreadable, say nothing
        pid, start = ((ts[1] & 0x1F) << 8) | ts[2], bool(ts[1] & 0x40)
        payload = _ts_payload(ts)
        if start and payload[:3] == _START and len(payload) >= 6:
            stated = int.from_bytes(payload[4:6], "big")
            want[pid] = stated + 6 - len(payload) if stated else 0
        elif want.get(pid):
            want[pid] -= len(payload)
    return any(missing > 0 for missing in want.values())


def _ts_payload(ts: bytes) -> bytes:
    control = (ts[3] >> 4) & 0x3
    if not control & 0x1:
        return b""  # adaptation field only
    at = 4 + (1 + ts[4] if control & 0x2 else 0)
    return ts[at:]


# --- program stream ---------------------------------------------------------------------------


def _ps_cut(tail: bytes) -> bool:
    """Walk the packs from a pack header near the end: a stated length past the last byte is a
    cut. A start-code pattern inside a payload fails the walk, and the next one is tried."""
    at = tail.find(_START + bytes([_PACK]))
    while at >= 0:
        ends = _ps_walk(tail, at)
        if ends is not None:
            return ends > len(tail)
        at = tail.find(_START + bytes([_PACK]), at + 1)
    return False


def _ps_walk(data: bytes, at: int) -> int | None:
    """Where the packets from `at` end (past `len(data)` when the last is cut short), or None
    when a packet boundary holds no start code (not a real pack header)."""
    while at < len(data):
        if len(data) - at < 4:
            return at + 4  # a start code cut in two
        if data[at : at + 3] != _START:
            return None
        size = _ps_packet_size(data, at)
        if size is None:
            return None
        at += size
    return at


def _ps_packet_size(data: bytes, at: int) -> int | None:
    """Bytes of the pack header or packet at `at` (a cut one counts its stated size)."""
    code = data[at + 3]
    if code == _END:
        return 4
    if code == _PACK:
        if len(data) - at < 14:
            return 14  # cut inside the pack header
        if data[at + 4] & 0xC0 == 0x40:  # MPEG-2: 14 bytes + stated stuffing
            return 14 + (data[at + 13] & 0x07)
        return 12 if data[at + 4] & 0xF0 == 0x20 else None  # MPEG-1
    if code >= 0xBB:  # system header and every PES stream id state their length
        if len(data) - at < 6:
            return 6
        return 6 + int.from_bytes(data[at + 4 : at + 6], "big")
    return None
