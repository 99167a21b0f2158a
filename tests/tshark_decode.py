"""Decode a CN/IP pcap twice, with tshark and with our own stack, into the same per-frame dict,
so a test can assert they agree frame by frame (issue 8: "the fields tshark shows ... equal our
own decode"). Facts: reference/lower-layers.md section 11.1.

``tshark_frames(path)`` runs ``tshark -r FILE -T fields`` (no ``-d``: the pcap must be
recognised as CN/IP on UDP 1628 by itself). ``our_frames(path)`` reads the same pcap records
with a small pcap reader, then cnip/packet.decode and lon/frame.decode.

The dict mirrors what Wireshark 4.0's LON dissector shows, quirks included, so the comparison
is exact rather than approximate:

* the CRC is not checked and its 2 bytes appear in ``data`` after an APDU's parameters (and
  nowhere after an ACK, a REMINDER or an AuthPDU);
* for AuthPDUs only the raw header byte and the transaction number are compared (tshark's
  display masks for its format and type are wrong);
* the service pin message (NM 0x7F) shows its Neuron ID as a second ``uid``, and ``data`` starts
  after its program ID;
* for address format 2b tshark puts the destination subnet under "Destination group"
  (lon.dstgrp); the mapping below undoes that, so ``dst_subnet`` means the same on both sides.

Keys: cnip_length, cnip_seq, cnip_session, priority, alt_path, delta_backlog, version,
pdu_format, address_format, domain (hex), src_subnet, src_node, dst_subnet, dst_node, group,
member, uid (list of hex), pdu_header (the TPDU/SPDU/AuthPDU byte), tid, auth, mlist_length,
apdu_code (the APDU's first byte, None for network variables), nv (16-bit NV header), data.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

from meter_emu.cnip import packet
from meter_emu.lon import frame
from meter_emu.lon.frame import (APDU, AUTH, Apdu, AuthPdu, Broadcast, Group, GroupAck,
                                 NeuronId, Spdu, SubnetNode, Tpdu)

TSHARK = "/usr/bin/tshark"

FIELDS = ["frame.number", "cnip.len", "cnip.seqno", "cnip.sessid", "lon.prio", "lon.alt_path",
          "lon.delta_bl", "lon.vers", "lon.pdufmt", "lon.addrfmt", "lon.domain", "lon.srcnet",
          "lon.srcnode", "lon.dstnet", "lon.dstgrp", "lon.dstnode", "lon.grp", "lon.grpmem",
          "lon.uid", "lon.tpdu", "lon.spdu", "lon.authpdu", "lon.trans_no", "lon.auth",
          "lon.spdu.mlen", "lon.application", "lon.nm", "lon.nd", "lon.ff", "lon.nv",
          "data.data"]


def tshark_available() -> bool:
    return shutil.which("tshark") is not None or shutil.which(TSHARK) is not None


def _int(text: str) -> int | None:
    if text in ("", "<MISSING>"):
        return None
    return int(text, 16) if text.startswith("0x") else int(text)


def tshark_frames(path) -> list[dict]:
    """tshark's decode of every frame in ``path``."""
    command = [shutil.which("tshark") or TSHARK, "-r", str(path), "-T", "fields",
               "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for name in FIELDS:
        command += ["-e", name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(f"tshark failed ({done.returncode}): {done.stderr}")
    frames = []
    for line in done.stdout.splitlines():
        if not line.strip():
            continue
        f = dict(zip(FIELDS, line.split("\t") + [""] * len(FIELDS)))
        address_format = _int(f["lon.addrfmt"])
        two_b = address_format == 2 and f["lon.grp"] != ""
        code = next((_int(f[k]) for k in ("lon.application", "lon.nm", "lon.nd", "lon.ff")
                     if f[k]), None)
        header = next((_int(f[k]) for k in ("lon.tpdu", "lon.spdu", "lon.authpdu") if f[k]),
                      None)
        frames.append({
            "cnip_length": _int(f["cnip.len"]), "cnip_seq": _int(f["cnip.seqno"]),
            "cnip_session": _int(f["cnip.sessid"]),
            "priority": _int(f["lon.prio"]), "alt_path": _int(f["lon.alt_path"]),
            "delta_backlog": _int(f["lon.delta_bl"]), "version": _int(f["lon.vers"]),
            "pdu_format": _int(f["lon.pdufmt"]), "address_format": address_format,
            "domain": f["lon.domain"].replace(":", "").replace("<MISSING>", ""),
            "src_subnet": _int(f["lon.srcnet"]), "src_node": _int(f["lon.srcnode"]),
            "dst_subnet": _int(f["lon.dstgrp"] if two_b else f["lon.dstnet"]),
            "dst_node": _int(f["lon.dstnode"]),
            "group": _int(f["lon.grp"] if two_b else f["lon.dstgrp"]),
            "member": _int(f["lon.grpmem"]),
            "uid": [u.replace(":", "") for u in f["lon.uid"].split(",") if u],
            "pdu_header": header, "tid": _int(f["lon.trans_no"]), "auth": _int(f["lon.auth"]),
            "mlist_length": _int(f["lon.spdu.mlen"]), "apdu_code": code,
            "nv": _int(f["lon.nv"]), "data": f["data.data"].replace(":", "") or None,
        })
    return frames


# ---- our side --------------------------------------------------------------------------------

def pcap_payloads(path) -> list[bytes]:
    """The UDP payloads of an Ethernet/IPv4/UDP pcap (what cnip/pcap.py writes)."""
    raw = open(path, "rb").read()
    magic, = struct.unpack_from("<I", raw)
    assert magic == 0xA1B2C3D4, f"not a little-endian microsecond pcap: {magic:08x}"
    linktype, = struct.unpack_from("<I", raw, 20)
    assert linktype == 1, f"linktype {linktype}, not Ethernet"
    pos, out = 24, []
    while pos + 16 <= len(raw):
        _, _, captured, _ = struct.unpack_from("<IIII", raw, pos)
        record = raw[pos + 16:pos + 16 + captured]
        pos += 16 + captured
        ihl = (record[14] & 0x0F) * 4
        udp = record[14 + ihl:]
        length, = struct.unpack_from(">H", udp, 4)
        out.append(bytes(udp[8:length]))
    return out


def _apdu_fields(apdu: bytes, crc: bytes) -> dict:
    first = apdu[0]
    if first & 0x80:
        return {"apdu_code": None, "nv": (first << 8) | apdu[1], "data": apdu[2:] + crc,
                "uid": []}
    if first == 0x7F:  # service pin: Neuron ID and program ID decoded, the rest is data
        return {"apdu_code": first, "nv": None, "data": apdu[15:] + crc,
                "uid": [apdu[1:7].hex()]}
    return {"apdu_code": first, "nv": None, "data": apdu[1:] + crc, "uid": []}


def our_frame(data: bytes) -> dict:
    """One CN/IP packet decoded by our stack into tshark_frames' dict shape."""
    header, raw = packet.decode(data)
    lpdu = frame.decode(raw)
    npdu, dst, pdu = lpdu.npdu, lpdu.npdu.dst, lpdu.npdu.pdu
    d = {"cnip_length": header.length, "cnip_seq": header.sequence,
         "cnip_session": header.session, "priority": int(lpdu.priority),
         "alt_path": int(lpdu.alt_path), "delta_backlog": lpdu.delta_backlog,
         "version": npdu.version, "pdu_format": npdu.pdu_format, "domain": npdu.domain.hex(),
         "src_subnet": npdu.src_subnet, "src_node": npdu.src_node, "dst_subnet": None,
         "dst_node": None, "group": None, "member": None, "uid": [], "pdu_header": None,
         "tid": None, "auth": None, "mlist_length": None, "apdu_code": None, "nv": None,
         "data": None}
    if isinstance(dst, Broadcast):
        d.update(address_format=0, dst_subnet=dst.subnet)
    elif isinstance(dst, Group):
        d.update(address_format=1, group=dst.group)
    elif isinstance(dst, SubnetNode):
        d.update(address_format=2, dst_subnet=dst.subnet, dst_node=dst.node)
    elif isinstance(dst, GroupAck):
        d.update(address_format=2, dst_subnet=dst.subnet, dst_node=dst.node, group=dst.group,
                 member=dst.member)
    elif isinstance(dst, NeuronId):
        d.update(address_format=3, dst_subnet=dst.subnet, uid=[dst.nid.hex()])
    crc = raw[-2:]
    apdu = b""
    if isinstance(pdu, AuthPdu):
        d.update(pdu_header=raw[_pdu_offset(raw)], tid=pdu.tid)
    elif isinstance(pdu, (Tpdu, Spdu)):
        d.update(pdu_header=raw[_pdu_offset(raw)], tid=pdu.tid, auth=int(pdu.auth))
        if pdu.type in (frame.REMINDER, frame.REM_MSG):
            d["mlist_length"] = len(pdu.mlist)
        apdu = pdu.apdu
    elif isinstance(pdu, Apdu):
        apdu = pdu.apdu
    if apdu:
        fields = _apdu_fields(apdu, crc)
        uid = d["uid"] + fields.pop("uid")
        d.update(fields, uid=uid)
        d["data"] = d["data"].hex() or None
    assert npdu.pdu_format in (APDU, AUTH) or d["pdu_header"] is not None
    return d


def _pdu_offset(raw: bytes) -> int:
    """Where the TPDU/SPDU/AuthPDU header byte sits in an LPDU."""
    header = raw[1]
    fmt = (header >> 2) & 3
    address = {0: 3, 1: 3, 3: 9}.get(fmt) or (4 if raw[3] & 0x80 else 6)
    return 2 + address + (0, 1, 3, 6)[header & 3]


def our_frames(path) -> list[dict]:
    return [our_frame(data) for data in pcap_payloads(path)]
