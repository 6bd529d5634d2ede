"""Compressed-audio bombs made on the spot: a few KB or MB of FLAC that decode to hours at a high rate.

A FLAC frame of one constant subframe holds 65,535 samples in 15 bytes or so (a 4,369:1 ratio at 16 bits), so
    flac_bomb(768_000, 4 * 3600)
is a valid 2.3 MB file that decodes to 11 billion samples (44 GB as float32). Written by hand (libsndfile will not
encode FLAC above 655,350 Hz, and encoding hours would take minutes): STREAMINFO, then one frame per block.
"""

import struct

BLOCK = 65535  # samples per frame: FLAC's largest block


def _table(width: int, poly: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        c = byte << (width - 8)
        for _ in range(8):
            c = ((c << 1) ^ poly) & mask if c & top else (c << 1) & mask
        table.append(c)
    return table


_CRC8, _CRC16 = _table(8, 0x07), _table(16, 0x8005)  # FLAC's frame header and frame checksums


def _crc8(data: bytes) -> int:
    c = 0
    for b in data:
        c = _CRC8[c ^ b]
    return c


def _crc16(data: bytes) -> int:
    c = 0
    for b in data:
        c = ((c << 8) & 0xFFFF) ^ _CRC16[(c >> 8) ^ b]
    return c


def flac_bomb(rate: int, seconds: float, channels: int = 1, value: int = 0x1000, header_length: bool = True) -> bytes:
    """A 16-bit FLAC of `seconds` of constant `value` at `rate` Hz (up to 1,048,575). `header_length`: False
    writes 0 ("unknown") as STREAMINFO's total sample count, as a streaming encoder does."""
    total = int(rate * seconds)
    info = struct.pack(">HH", BLOCK, BLOCK) + bytes(6)  # block sizes; frame sizes unknown
    info += ((rate << 44) | ((channels - 1) << 41) | (15 << 36) | (total if header_length else 0)).to_bytes(8, "big")
    out = [b"fLaC", bytes([0x80, 0, 0, 34]), info, bytes(16)]  # last metadata block, STREAMINFO; MD5 unknown
    for k in range(-(-total // BLOCK)):
        size = min(BLOCK, total - k * BLOCK)
        # sync + fixed blocking; 16-bit block size at the end, rate from STREAMINFO; channels; bits from STREAMINFO;
        # the frame number in FLAC's UTF-8-like coding
        head = bytes([0xFF, 0xF8, 0x70, (channels - 1) << 4]) + chr(k).encode("utf-8", "surrogatepass")
        head += struct.pack(">H", size - 1)
        frame = head + bytes([_crc8(head)]) + (b"\x00" + struct.pack(">h", value)) * channels  # CONSTANT subframes
        out.append(frame + struct.pack(">H", _crc16(frame)))
    return b"".join(out)
