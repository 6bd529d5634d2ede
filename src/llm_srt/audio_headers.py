"""What a sound file's container says of its length, read from its bytes without decoding: the data sizes of WAV
(RIFF, RIFX, RF64), AIFF/AIFC, AU and W64 headers, an Ogg stream's last page, an MP3's Xing/Info count and its frames
walked one by one. audio.py compares them with what decodes, so a file cut short is found (libsndfile trusts a
header's or last page's length and reads a cut file as a whole, shorter one)."""

import os
import struct

WAV_HEADER_SCAN = 1 << 20  # the chunks before a WAV's data chunk (fmt, LIST, ...) are looked for this far in
RIFF_MAX = 0xFFFFFFFF  # a RIFF size field's largest value: a WAV's length past 4 GiB needs RF64
WAV_PLACEHOLDER = 0x7FFFF000  # a data size this large stands for "length unknown" (sox writes it to a pipe, others
#   RIFF_MAX), so a WAV that claims it and holds less is streamed, not cut short; one cut short past 2 GiB looks alike
WAV_FRAMED = (1, 3, 6, 7, 0xFFFE)  # fmt tags (PCM, float, A-law, mu-law, extensible) whose block align is one frame
AIFF_PLACEHOLDER = 0x7F000000 - (1 << 16)  # sox writes an AIFF to a pipe claiming 0x7F000000 bytes (less part of
#   a frame): a length not known, as WAV_PLACEHOLDER is
AU_UNKNOWN = 0xFFFFFFFF  # an AU's data size for "length unknown", as its format defines it (written to a pipe)
AU_SAMPLE_BYTES = {1: 1, 2: 1, 3: 2, 4: 3, 5: 4, 6: 4, 7: 8, 27: 1}  # per AU encoding: mu-law, PCM 8-32, float,
#   double, A-law (others, ADPCM: a byte, so a frame is never taken as larger than it is)
AIFC_PCM = {b"NONE", b"twos", b"sowt", b"raw ", b"in24", b"42ni", b"in32", b"23ni", b"fl32", b"FL32", b"fl64", b"FL64"}
W64_GUID = bytes.fromhex("f3acd3118cd100c04f8edb8a")  # the 12 bytes after the 4-letter name in a Wave64 chunk's GUID
W64_RIFF = b"riff" + bytes.fromhex("2e91cf11a5d628db04c10000")
W64_UNKNOWN = 1 << 62  # a W64 data size this large is a length not known (sox's pipe placeholder)
OGG_PAGE_MAX = 27 + 255 + 255 * 255  # an Ogg page's most bytes: its header, 255 lacing values, 255 segments of 255
OGG_END = 0x04  # an Ogg page's header_type flag (byte 5) for a stream's last page (end of stream)
HEADER_SCAN = 1 << 16  # an AIFF's or W64's chunks before its sound data are looked for this far in
MP3_KBPS = {True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 Layer III
            False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}  # MPEG-2 and 2.5
MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits


def sized_cut(target: int | bytes) -> tuple[int, int] | None:
    """(bytes held, bytes claimed) of a WAV (RF64 too), AIFF, AU or W64 whose sound data claims more bytes than
    follow its header (a recording or copy cut short: libsndfile trims the length to what is there, without an
    error). None for anything else: a whole file (an odd chunk's pad byte, chunks after the data), or one whose size
    stands for a length not known, 0 (_unsized_wav) or a pipe writer's placeholder (WAV_PLACEHOLDER and above,
    AIFF_PLACEHOLDER, AU_UNKNOWN)."""
    first = _read_at(target, 0, 40)
    if first[:4] in (b"RIFF", b"RIFX", b"RF64"):
        found = _wav_data(target)  # an RF64's size is 64-bit (its ds64 chunk's): "unknown" only as large as W64's
        found = found and (len(found[1]), found[2], found[3], W64_UNKNOWN if first[:4] == b"RF64" else WAV_PLACEHOLDER)
    elif first[:4] == b"FORM" and first[8:12] in (b"AIFF", b"AIFC"):
        found = _aiff_data(_read_at(target, 0, HEADER_SCAN))
    elif first[:4] == b".snd" and len(first) >= 24:  # AU: data offset, data size, encoding, rate, channels
        start, size, encoding, _, channels = struct.unpack_from(">5I", first, 4)
        found = start, size, max(1, channels * AU_SAMPLE_BYTES.get(encoding, 1)), AU_UNKNOWN
    elif first[:16] == W64_RIFF and first[24:40] == b"wave" + W64_GUID:
        found = _w64_data(_read_at(target, 0, HEADER_SCAN))
    else:
        return None
    if not found:
        return None
    start, claimed, frame, unknown = found
    held = _size(target) - start
    # short by part of a frame only (a writer's size off by a few bytes): no sample is missing, nothing is cut
    return (held, claimed) if 0 < held // frame < claimed // frame and claimed < unknown else None


def ogg_cut_short(target: int | bytes) -> bool:
    """Whether an Ogg file (Vorbis, Opus) ends before its stream does: its last page (the last "OggS" in its last
    OGG_PAGE_MAX bytes with version 0 and only known flags) lacks the end-of-stream flag, or runs past the file's end.
    Every stream of a whole Ogg file ends on a page with that flag, so its last page has it, whatever streams it
    holds. libsndfile takes an Ogg's length from its last page, so a file cut short loaded as a whole, shorter one
    (half a clip paired with the whole transcript). False for anything else, and where no page is found there."""
    if _read_at(target, 0, 4) != b"OggS":
        return False
    start = max(0, _size(target) - OGG_PAGE_MAX)
    tail = _read_at(target, start, OGG_PAGE_MAX)
    at = len(tail)
    while (at := tail.rfind(b"OggS", 0, at)) >= 0:
        page = tail[at:at + 27]
        if page[4:5] not in (b"", b"\0") or len(page) > 5 and page[5] & ~0x07:  # inside a packet, not a header
            continue
        if len(page) < 27:  # cut inside the last page's header
            return True
        lacing = tail[at + 27:at + 27 + page[26]]
        return not page[5] & OGG_END or len(lacing) < page[26] or at + 27 + page[26] + sum(lacing) > len(tail)
    return False


def _aiff_data(head: bytes) -> tuple[int, int, int, int] | None:
    """An AIFF's (or AIFC's) sound data as its header gives it: (where it starts, the bytes it claims, the bytes of
    a frame (of a block: IMA ADPCM), AIFF_PLACEHOLDER). The claim is the smaller of SSND's size and COMM's frame
    count, as a file cut short falls short of both: a writer's slip in one alone is not taken for a cut. None
    without COMM before SSND within `head`, or for a compression whose frame size is not known here."""
    comm = None
    for name, at, size in _chunks(head, 12, wide=False):
        if name == b"COMM" and at + 22 <= len(head):
            channels, count, bits = struct.unpack_from(">HIH", head, at)
            kind = head[at + 18:at + 22] if head[8:12] == b"AIFC" else b"NONE"
            if kind in AIFC_PCM:
                comm = count, channels * ((bits + 7) // 8)
            elif kind in (b"ulaw", b"ULAW", b"alaw", b"ALAW"):
                comm = count, channels
            elif kind == b"ima4":
                comm = count, 34 * channels  # blocks of 34 bytes a channel (64 frames): COMM counts the blocks
            else:
                return None
        if name == b"SSND" and comm is not None and at + 8 <= len(head):
            count, block = comm[0], max(1, comm[1])
            offset = struct.unpack_from(">I", head, at)[0]
            return at + 8 + offset, min(size - 8 - offset, count * block), block, AIFF_PLACEHOLDER
    return None


def _w64_data(head: bytes) -> tuple[int, int, int, int] | None:
    """A Sony Wave64's data chunk as its header gives it: (where its samples start, the bytes it claims, the bytes
    of a frame as its fmt chunk gives them (1 without one), W64_UNKNOWN: sox writing to a pipe claims
    0x7FFFFFFFFFFFD907 bytes, a length not known). None without one within `head`."""
    frame = 1
    for name, at, size in _chunks(head, 40, wide=True):
        if name == b"fmt " + W64_GUID and at + 14 <= len(head) and struct.unpack_from("<H", head, at)[0] in WAV_FRAMED:
            frame = max(1, struct.unpack_from("<H", head, at + 12)[0])  # WAVEFORMATEX's block align, as in a WAV
        if name == b"data" + W64_GUID:
            return at, size, frame, W64_UNKNOWN
    return None


def _chunks(head: bytes, at: int, wide: bool):
    """(name, where its body starts, its body's size) of each chunk in `head` from byte `at`: AIFF's (a 4-byte name,
    a 32-bit big-endian size, padded to 2 bytes) or, `wide`, W64's (a 16-byte GUID, a 64-bit little-endian size
    that counts its 24-byte header, padded to 8). Stops at the end of `head`, or after a size too small for one."""
    header, align = (24, 8) if wide else (8, 2)
    while at + header <= len(head):
        if wide:
            name, size = head[at:at + 16], struct.unpack_from("<Q", head, at + 16)[0] - header
        else:
            name, size = head[at:at + 4], struct.unpack_from(">I", head, at + 4)[0]
        yield name, at + header, size
        if size < 0:
            return
        at += header + size + (-size % align)


def _mp3_counted(target: int | bytes) -> bool:
    """Whether an MP3's first frame carries a Xing/Info header with a frame count: its length is then counted, and
    libsndfile gives it even for a file cut short. Without one (a VBRI header's count libsndfile does not read), the
    length is estimated from the file's size and bit rate, so a decoded count short of it tells nothing (and is
    never refused)."""
    frame = _read_at(target, _mp3_start(target), 64)
    if _layer3_frame(frame) is None:
        return False
    mpeg1, mono, crc = frame[1] >> 3 & 3 == 3, frame[3] >> 6 == 3, 0 if frame[1] & 1 else 2
    side = (17 if mono else 32) if mpeg1 else (9 if mono else 17)  # the side information Xing/Info follows
    for xing in (4 + side, 4 + crc + side):
        if frame[xing:xing + 4] in (b"Xing", b"Info") and len(frame) >= xing + 12:
            flags, count = struct.unpack_from(">II", frame, xing + 4)
            return bool(flags & 1 and count)  # flag 1: the frame count is there
    return False


def _wav_data(target: int | bytes) -> tuple[str, bytes, int, int] | None:
    """A RIFF (or RIFX, or RF64) WAV's data chunk as its header gives it: (struct byte order, the file's bytes up to
    the end of that chunk's header, the size the header gives, the bytes of a frame as its fmt chunk gives them (1
    without one)). An RF64's data chunk says 0xFFFFFFFF, its size being its ds64 chunk's 64-bit dataSize (EBU Tech
    3306: riffSize, dataSize, sampleCount; libsndfile writes them so). None for anything else, or a data chunk not
    within the first WAV_HEADER_SCAN bytes (64 KiB read first: every WAV load asks, and a training clip is often
    smaller than the whole scan)."""
    first = _read_at(target, 0, 12)
    if first[:4] not in (b"RIFF", b"RIFX", b"RF64") or first[8:12] != b"WAVE":  # before reading the rest of the head
        return None
    order = ">" if first[:4] == b"RIFX" else "<"
    for scan in sorted({min(1 << 16, WAV_HEADER_SCAN), WAV_HEADER_SCAN}):
        head, at, frame, wide = _read_at(target, 0, scan), 12, 1, None
        while at + 8 <= len(head):
            chunk, size = head[at:at + 4], struct.unpack_from(order + "I", head, at + 4)[0]
            if chunk == b"ds64" and first[:4] == b"RF64" and at + 24 <= len(head):
                wide = struct.unpack_from("<Q", head, at + 16)[0]  # dataSize, after the 8-byte riffSize
            if chunk == b"fmt " and at + 22 <= len(head) and struct.unpack_from(order + "H", head, at + 8)[0] \
                    in WAV_FRAMED:  # block align (fmt's bytes 12-13) is a frame (ADPCM's, a block: left at 1)
                frame = max(1, struct.unpack_from(order + "H", head, at + 20)[0])
            if chunk == b"data":
                return order, head[:at + 8], wide if size == RIFF_MAX and wide is not None else size, frame
            at += 8 + size + (size & 1)
        if len(head) < scan:  # the whole file was read
            return None
    return None


def _mp3_start(target: int | bytes) -> int:
    """Where an MP3's first frame would start: after its ID3v2 tags (a 10-byte header, as much footer with flag
    0x10, a syncsafe size)."""
    at = 0
    for _ in range(4):
        if (tag := _read_at(target, at, 10))[:3] != b"ID3" or len(tag) < 10:
            break
        at += 10 + (10 if tag[5] & 0x10 else 0) + sum((b & 0x7F) << 7 * (3 - i) for i, b in enumerate(tag[6:10]))
    return at


def _layer3_frame(head: bytes) -> tuple[int, int] | None:
    """(bytes, samples) of the MPEG-1, 2 or 2.5 Layer III frame whose 4-byte header starts `head`; None for
    anything else (no sync, another layer, a free-format or reserved bit rate or sample rate)."""
    if len(head) < 4 or head[0] != 0xFF or head[1] >> 5 != 7 or head[1] >> 1 & 3 != 1 or head[1] >> 3 & 3 == 1:
        return None
    version, kbps, rate = head[1] >> 3 & 3, head[2] >> 4, head[2] >> 2 & 3
    if kbps in (0, 15) or rate == 3:
        return None
    mpeg1 = version == 3
    samples = 1152 if mpeg1 else 576
    return samples // 8 * 1000 * MP3_KBPS[mpeg1][kbps] // MP3_RATES[version][rate] + (head[2] >> 1 & 1), samples


def _mp3_walked(target: int | bytes) -> int | None:
    """The samples (per channel, at the file's rate) of an MP3 (one whose first frame has no Xing/Info count:
    `_mp3_counted`, the caller's check), by walking its frames' headers to the file's end; None for anything else.
    Past anything between frames that is not one (damage) the walk goes on at the next frame of the stream
    (_mp3_resync), so bytes after the last frame (an ID3v1, APE or Lyrics3 tag, zero padding) add nothing, and the
    frames after damage still count: a decoder error after all of them decoded is not a cut. libsndfile
    decodes such a stream only as far as the length it estimates from the first frame's bit rate: a VBR file
    without that header (a stripped stream) opening on quiet, low-rate frames decoded 4.1 s of 20, without a word."""
    at = _mp3_start(target)
    first = _read_at(target, at, 4)
    if (frame := _layer3_frame(first)) is None:
        return None
    total, end = 0, _size(target)
    while frame is not None:
        while frame is not None and at + frame[0] <= end:
            total += frame[1]
            at += frame[0]
            frame = _layer3_frame(_read_at(target, at, 4))
        at, frame = _mp3_resync(target, at + 1, first)
    return total


def _mp3_resync(target: int | bytes, at: int, first: bytes) -> tuple[int, tuple[int, int] | None]:
    """The next frame from byte `at` on of the stream whose first frame's header is `first` (its version, layer and
    sample rate) that another follows (a sync word in a tag or damage is seldom both): (where it starts,
    _layer3_frame's answer), or (the file's end, None) where none does."""
    end = _size(target)

    def ours(head: bytes) -> tuple[int, int] | None:
        same = len(head) == 4 and head[1] | 1 == first[1] | 1 and (head[2] ^ first[2]) & 0x0C == 0
        return _layer3_frame(head) if same else None

    while at < end:
        chunk = _read_at(target, at, 1 << 16)
        i = chunk.find(b"\xff")
        while i >= 0:  # (a header within the chunk is taken from it: a run of 0xFF bytes is not a read each)
            head = chunk[i:i + 4] if i + 4 <= len(chunk) else _read_at(target, at + i, 4)
            if (frame := ours(head)) and ours(_read_at(target, at + i + frame[0], 4)):
                return at + i, frame
            i = chunk.find(b"\xff", i + 1)
        at += len(chunk)
    return end, None


def _read_at(target: int | bytes, at: int, n: int) -> bytes:
    """`n` bytes of a file (its descriptor, whose position is left as it was) or of bytes, from byte `at` (fewer at
    the end)."""
    if isinstance(target, int):
        return os.pread(target, n, at) if n > 0 else b""
    return bytes(target[at:at + max(0, n)])


def _size(target: int | bytes) -> int:
    return os.fstat(target).st_size if isinstance(target, int) else len(target)
