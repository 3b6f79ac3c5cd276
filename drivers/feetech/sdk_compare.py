"""Our Feetech codec against the vendor SDK, byte for byte.

The vendor SDK (PyPI ``feetech-servo-sdk``, import name ``scservo_sdk``) is used only as
an independent reference: its PacketHandler / GroupSyncRead / GroupSyncWrite build the
frames, a ``PortHandler`` subclass records what they write (and, for status packets,
feeds them our bytes), and the two byte strings must be identical. Every SDK frame must
also parse back, with our ``find_packet``, into the fields it was built from.

    python -m robot_rl.drivers.feetech.sdk_compare [N] [SEED]
"""
from __future__ import annotations

import json
import random
import sys
from typing import Any

from ..servo.table import Register, decode_value, encode_value
from .protocol import BROADCAST_ID, MAX_ID, MAX_PACKET, FeetechProtocol

INSTRUCTIONS = ("PING", "READ", "WRITE", "REG_WRITE", "ACTION", "SYNC_READ", "SYNC_WRITE", "STATUS", "ENCODING")


def _sdk():
    try:
        import scservo_sdk as scs  # noqa: F401
        from scservo_sdk import scservo_def
    except ImportError as e:
        raise ImportError("comparing the Feetech codec needs the vendor SDK as a reference: "
                          f"pip install feetech-servo-sdk (import name scservo_sdk; {e})") from e
    return scs, scservo_def


def _capture_port(scs):
    class CapturePort(scs.PortHandler):
        """A port with no serial line: records every write, reads from ``rx``, and
        times out at once when ``rx`` runs dry (so no SDK call ever waits)."""

        def __init__(self):
            super().__init__("capture")
            self.is_open = True
            self.tx: list[bytes] = []
            self.rx = bytearray()

        def writePort(self, packet):
            self.tx.append(bytes(packet))
            return len(packet)

        def readPort(self, length):
            out = bytes(self.rx[:length])
            del self.rx[:length]
            return out

        def clearPort(self):
            pass

        def isPacketTimeout(self):
            return True

        def take(self) -> bytes | None:
            """The one frame written since the last take (None: nothing written)."""
            frames, self.tx = self.tx, []
            self.is_using = False  # readTx / syncReadTx leave the port "busy" until an rx
            if len(frames) > 1:
                raise AssertionError(f"the SDK wrote {len(frames)} frames for one call")
            return frames[0] if frames else None

    return CapturePort()


def _ids(rng: random.Random, k: int) -> list[int]:
    return rng.sample(range(0, MAX_ID + 1), k)


def compare(n: int = 1000, seed: int = 0, protocol: FeetechProtocol | None = None) -> dict[str, dict[str, Any]]:
    """Build ``n`` random frames per instruction with our codec and with the vendor SDK.

    Returns ``{instruction: {"frames": n, "identical": k, "first_mismatch": None | {...}}}``
    for PING, READ, WRITE, REG_WRITE, ACTION, SYNC_READ, SYNC_WRITE (instruction packets,
    SDK -> bytes), STATUS (our status packets read by the SDK's ``readRx``: same id, error
    and data) and ENCODING (register values: our ``encode_value``/``decode_value`` against the
    SDK's byte and sign-magnitude macros, both byte orders). A few frames per instruction
    are deliberately too long: both sides must refuse them (the SDK writes nothing, we
    raise ``ValueError``). ``protocol``: the codec under test (default ``FeetechProtocol()``);
    each result also counts the ``refused`` frames (too long for both)."""
    scs, sdef = _sdk()
    rng = random.Random(seed)
    ours = protocol if protocol is not None else FeetechProtocol()
    port = _capture_port(scs)
    saved_end = sdef.SCS_GETEND()  # the SDK keeps its byte order in a module global
    try:
        ph = scs.PacketHandler(0)  # STS/SMS: little-endian

        def parsed_ok(frame: bytes, want_id: int, want_code: int, want_params: bytes) -> bool:
            pkt, used, junk = ours.find_packet(frame, status=False)
            return (pkt is not None and used == len(frame) and junk == 0 and pkt.id == want_id
                    and pkt.code == want_code and pkt.params == want_params)

        def ping():
            sid = rng.randint(0, MAX_ID)  # the SDK refuses to ping the broadcast id
            ph.ping(port, sid)
            sdk, mine = port.take(), ours.ping(sid)
            return sdk, mine, {"id": sid, "parsed": parsed_ok(sdk, sid, 0x01, b"")}

        def read():
            sid, addr, length = rng.randint(0, MAX_ID), rng.randint(0, 255), rng.randint(1, 200)
            ph.readTx(port, sid, addr, length)
            sdk, mine = port.take(), ours.read(sid, addr, length)
            return sdk, mine, {"id": sid, "addr": addr, "length": length,
                               "parsed": parsed_ok(sdk, sid, 0x02, bytes((addr, length)))}

        def write_like(reg: bool):
            def case():
                sid, addr = rng.randint(0, BROADCAST_ID), rng.randint(0, 255)
                too_long = rng.random() < 0.02
                size = rng.choice((1, 2, 4, rng.randint(1, 240))) if not too_long else rng.randint(244, 260)
                if not reg and size in (1, 2, 4):  # the SDK's own value encoding (little-endian)
                    value = rng.randrange(1 << (8 * size))
                    fn = {1: ph.write1ByteTxRx, 2: ph.write2ByteTxRx, 4: ph.write4ByteTxRx}[size]
                    fn(port, sid, addr, value)
                    data = value.to_bytes(size, "little")
                else:
                    data = bytes(rng.randrange(256) for _ in range(size))
                    (ph.regWriteTxRx if reg else ph.writeTxRx)(port, sid, addr, size, list(data))
                sdk = port.take()
                try:
                    mine = (ours.reg_write if reg else ours.write)(sid, addr, data)
                except ValueError:
                    mine = None
                code = 0x04 if reg else 0x03
                info = {"id": sid, "addr": addr, "size": size,
                        "parsed": sdk is None or parsed_ok(sdk, sid, code, bytes((addr,)) + data)}
                return sdk, mine, info
            return case

        def action():
            sid = rng.randint(0, BROADCAST_ID)
            ph.action(port, sid)
            sdk, mine = port.take(), ours.action(sid)
            return sdk, mine, {"id": sid, "parsed": parsed_ok(sdk, sid, 0x05, b"")}

        def sync_read():
            too_long = rng.random() < 0.02
            k = rng.randint(1, 40) if not too_long else rng.randint(243, 250)
            ids = _ids(rng, k)
            addr, length = rng.randint(0, 255), rng.randint(1, 200)
            group = scs.GroupSyncRead(port, ph, addr, length)
            for i in ids:
                group.addParam(i)
            group.txPacket()
            sdk = port.take()
            try:
                mine = ours.sync_read(ids, addr, length)
            except ValueError:
                mine = None
            info = {"ids": ids, "addr": addr, "length": length,
                    "parsed": sdk is None or parsed_ok(sdk, BROADCAST_ID, 0x82, bytes((addr, length, *ids)))}
            return sdk, mine, info

        def sync_write():
            too_long = rng.random() < 0.02
            length = rng.randint(1, 8) if rng.random() < 0.8 else rng.randint(1, 60)
            most = (MAX_PACKET - 8) // (length + 1)
            k = rng.randint(1, most) if not too_long else most + rng.randint(1, 3)
            ids = _ids(rng, min(k, MAX_ID + 1))
            addr = rng.randint(0, 255)
            data = {i: bytes(rng.randrange(256) for _ in range(length)) for i in ids}
            group = scs.GroupSyncWrite(port, ph, addr, length)
            for i, d in data.items():
                group.addParam(i, list(d))
            group.txPacket()
            sdk = port.take()
            try:
                mine = ours.sync_write(addr, length, data)
            except ValueError:
                mine = None
            params = bytes((addr, length)) + b"".join(bytes((i,)) + d for i, d in data.items())
            info = {"ids": ids, "addr": addr, "length": length,
                    "parsed": sdk is None or parsed_ok(sdk, BROADCAST_ID, 0x83, params)}
            return sdk, mine, info

        def status():
            sid, err = rng.randint(0, MAX_ID), rng.randint(0, 0x7F)  # the SDK drops error bytes > 0x7F
            data = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 2, 4, rng.randint(0, 120)))))
            frame = ours.status(sid, err, data)
            # junk before the reply: the SDK must find our packet behind it, as ours does
            junk = bytes(rng.choice((0x00, 0x11, 0xFE, 0x7F)) for _ in range(rng.choice((0, 0, 1, 3))))
            port.rx = bytearray(junk + frame)
            got, result, error = ph.readRx(port, sid, len(data))
            port.is_using = False
            sdk_view = (list(got), result, error)
            want = (list(data), scs.COMM_SUCCESS, err)
            pkt, used, garbage = ours.find_packet(junk + frame, status=True)
            ok_ours = pkt is not None and (pkt.id, pkt.code, pkt.params) == (sid, err, data) and garbage == len(junk)
            return sdk_view, want, {"id": sid, "error": err, "frame": frame.hex(" "), "junk": junk.hex(" "),
                                    "parsed": ok_ours}

        def encoding():
            size = rng.choice((1, 2, 2, 4))
            # the SDK's 4-byte layout is low word first; SCS registers (big-endian) are <= 2 bytes
            byteorder = rng.choice(("little", "big")) if size < 4 else "little"
            sign_bit = rng.choice((None, 15, 11, 10)) if size == 2 else None
            reg = Register("r", 0, size, sign_bit=sign_bit)
            if sign_bit is None:
                value = raw = rng.randrange(1 << (8 * size))
            else:
                value = rng.randint(-(1 << sign_bit) + 1, (1 << sign_bit) - 1)
                raw = sdef.SCS_TOSCS(value, sign_bit)
            sdef.SCS_SETEND(0 if byteorder == "little" else 1)
            try:
                if size == 1:
                    sdk_bytes, back = bytes((raw,)), raw
                elif size == 2:
                    sdk_bytes = bytes((sdef.SCS_LOBYTE(raw), sdef.SCS_HIBYTE(raw)))
                    back = sdef.SCS_MAKEWORD(*sdk_bytes)
                else:
                    lo, hi = sdef.SCS_LOWORD(raw), sdef.SCS_HIWORD(raw)
                    sdk_bytes = bytes((sdef.SCS_LOBYTE(lo), sdef.SCS_HIBYTE(lo), sdef.SCS_LOBYTE(hi), sdef.SCS_HIBYTE(hi)))
                    back = sdef.SCS_MAKEDWORD(sdef.SCS_MAKEWORD(*sdk_bytes[:2]), sdef.SCS_MAKEWORD(*sdk_bytes[2:]))
            finally:
                sdef.SCS_SETEND(0)
            if sign_bit is not None:
                back = sdef.SCS_TOHOST(back, sign_bit)
            mine = encode_value(value, reg, byteorder)
            return (back, sdk_bytes), (decode_value(mine, reg, byteorder), mine), {
                "value": value, "size": size, "byteorder": byteorder, "sign_bit": sign_bit, "parsed": back == value}

        cases = {"PING": ping, "READ": read, "WRITE": write_like(False), "REG_WRITE": write_like(True),
                 "ACTION": action, "SYNC_READ": sync_read, "SYNC_WRITE": sync_write, "STATUS": status,
                 "ENCODING": encoding}
        out: dict[str, dict[str, Any]] = {}
        for name in INSTRUCTIONS:
            same, refused, first = 0, 0, None
            for k in range(n):
                sdk, mine, info = cases[name]()
                parsed = info.pop("parsed")
                if sdk == mine and parsed:
                    same += 1
                    refused += sdk is None
                elif first is None:
                    first = {"case": k, **info, "parsed": parsed,
                             "sdk": sdk.hex(" ") if isinstance(sdk, bytes) else repr(sdk),
                             "ours": mine.hex(" ") if isinstance(mine, bytes) else repr(mine)}
            out[name] = {"frames": n, "identical": same, "refused": refused, "first_mismatch": first}
        return out
    finally:
        sdef.SCS_SETEND(saved_end)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 1000
    seed = int(args[1]) if len(args) > 1 else 0
    result = compare(n, seed)
    print(json.dumps(result, indent=2))
    return 0 if all(r["identical"] == r["frames"] for r in result.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
