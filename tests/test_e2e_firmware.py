"""End to end: code bank images made with ``meter-emu firmware build``, downloaded through the
optical port of a running ``meter-emu run`` (the client library for shuffled and repeated
packets, ``meter-emu firmware download`` for the user's path), checked in ET17, switched, read
back with termineter's ``c1218`` library; a corrupted image refused; ``kill -9`` mid-download
resumed from ET17; the AES image MAC."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from meter_emu.client import firmware as fw
from meter_emu.client.optical import connect, parse_password

try:  # tests/ as a package or as a plain directory on sys.path
    from . import e2e
except ImportError:
    import e2e

start_emulator = e2e.start_emulator  # the fixture, used by name

ET04, ET17, BT74 = 2048 + 4, 2048 + 17, 74
EP09 = 2048 + 9
PROGRAM_ID = "9FFFFF0500000077"
SIZE = 6000  # 94 packets of 64 bytes
PACKETS = -(-SIZE // 64)
MK_TEXT = e2e.MK.decode()
AES_KEY = "AES-key-for-emu!"
AES = ["--set", 'security.mode="aes"', "--set", f'keys.oma="{AES_KEY}"',
       "--set", 'identity.firmware_version="3.80.01"']


def packed(version: str) -> int:
    major, minor, build = (int(part) for part in version.split("."))
    return major << 12 | minor << 5 | build


def build(tmp_path: Path, version: str, *extra: str) -> Path:
    out = tmp_path / f"image-{version}{'-'.join(extra)}.bin"
    done = e2e.run_meter_emu("firmware", "build", "--program-id", PROGRAM_ID, "--version",
                             version, "--size", str(SIZE), *extra, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size == SIZE
    return out


def firmware_cli(*args: str):
    return e2e.run_meter_emu("firmware", *args, timeout=60)


def bt01_version(url: str) -> bytes:
    return e2e.read_table_lib(url, 1)[14:16]  # OPG p.19, MSB first


def et17_packets(url: str) -> set[int]:
    bitmap = e2e.read_table_lib(url, ET17)  # independent reader: termineter's c1218
    return {n for n in range(len(bitmap) * 8) if bitmap[n // 8] >> (n % 8) & 1}


def history(url: str) -> e2e.HistoryLog:
    return e2e.parse_bt74(e2e.read_table_lib(url, BT74))


def test_shuffled_repeated_packets_then_switch_and_back(start_emulator, tmp_path):
    path = build(tmp_path, "3.20.05")
    assert firmware_cli("inspect", str(path)).stdout.rstrip().endswith("ok")
    image = path.read_bytes()
    emu = start_emulator()
    first = list(range(PACKETS))
    random.Random(7).shuffle(first)
    first = first[:60] + first[:5]  # 60 packets out of order, 5 of them twice
    client = connect(emu.optical)
    try:
        with client.session(parse_password(MK_TEXT)):
            assert client.procedure(2048 + 8)[0] == 0  # EP08
            for n in first:
                params = (n * 64).to_bytes(4, "little") + image[n * 64:(n + 1) * 64]
                assert client.procedure(EP09, params)[0] == 0
            assert et17_packets(emu.client_url) == set(first)
            rest = sorted(set(range(PACKETS)) - set(first), reverse=True)
            summary = fw.download(client, image, order=rest + rest[:3])
            assert (summary.already, summary.sent) == (60, 34 + 1 + 3)  # header, 3 repeats
    finally:
        client.close()
    assert et17_packets(emu.client_url) == set(range(PACKETS))
    idt = e2e.read_table_lib(emu.client_url, ET04)[116]

    done = firmware_cli("switch", emu.optical)
    assert done.returncode == 0, done.stderr
    assert "BT01 reports firmware 3.20.05" in done.stdout
    assert bt01_version(emu.client_url) == packed("3.20.05").to_bytes(2, "big")
    et04 = e2e.read_table_lib(emu.client_url, ET04)
    assert et04[14:22] == bytes.fromhex(PROGRAM_ID) and et04[116] == (idt + 1) & 0xFF
    log = history(emu.client_url)
    assert [e.argument for e in log.events(2)] == [5]  # power up, cause 5: bank switchover
    assert [e.argument for e in log.events(78)] == [1]  # code bank changed: bank 1
    assert [e.argument for e in log.events(36)] == [packed("3.20.05")]  # reprogrammed
    assert not et17_packets(emu.client_url)  # no download under way

    back = firmware_cli("switch", emu.optical)  # the previous image is still in bank 0
    assert back.returncode == 0, back.stderr
    assert "code bank 0 runs, BT01 reports firmware 3.10.21" in back.stdout
    assert bt01_version(emu.client_url) == packed("3.10.21").to_bytes(2, "big")


def test_cli_download_and_a_corrupted_image_refused(start_emulator, tmp_path):
    good = build(tmp_path, "3.30.01")
    bad = tmp_path / "corrupted.bin"
    data = bytearray(good.read_bytes())
    data[3000] ^= 0x55  # one body byte: the header's CRC-32 no longer matches
    bad.write_bytes(bytes(data))
    inspected = firmware_cli("inspect", str(bad))
    assert inspected.returncode == 1 and "BAD: the CRC-32" in inspected.stdout

    emu = start_emulator()
    before = (e2e.read_table_lib(emu.client_url, 1), e2e.read_table_lib(emu.client_url, ET04))
    refused = firmware_cli("download", emu.optical, str(bad), "--switch")
    assert refused.returncode == 1, refused.stderr
    assert f"ET17: {PACKETS} of {PACKETS} packets received" in refused.stdout
    assert "EP10 switch code bank: the meter answered result 3" in refused.stderr
    assert (e2e.read_table_lib(emu.client_url, 1),
            e2e.read_table_lib(emu.client_url, ET04)) == before  # nothing changed
    log = history(emu.client_url)
    assert [e.argument for e in log.events(77)] == [1]  # BT03 Software CRC Error, bank 1
    assert log.events(78) == [] and log.events(36) == []

    done = firmware_cli("download", emu.optical, str(good), "--erase", "--switch")
    assert done.returncode == 0, done.stderr
    assert "code bank 1 erased" in done.stdout
    assert "switched: code bank 1 runs, BT01 reports firmware 3.30.01" in done.stdout
    assert bt01_version(emu.client_url) == packed("3.30.01").to_bytes(2, "big")


def test_kill9_mid_download_resumes_from_et17(start_emulator, tmp_path):
    path = build(tmp_path, "3.40.02")
    image = path.read_bytes()
    state = tmp_path / "state"
    emu = start_emulator(state=state)
    sent = list(range(PACKETS))
    random.Random(3).shuffle(sent)
    sent = sent[:40]
    client = connect(emu.optical)
    client.ident()
    client.negotiate()
    client.logon()
    client.security(parse_password(MK_TEXT))
    assert client.procedure(2048 + 8)[0] == 0
    for n in sent:
        params = (n * 64).to_bytes(4, "little") + image[n * 64:(n + 1) * 64]
        assert client.procedure(EP09, params)[0] == 0
    emu.kill9()  # right after the meter acknowledged the last packet
    client.close()
    assert emu.proc.returncode == -9

    again = start_emulator(state=state)
    assert et17_packets(again.client_url) == set(sent)  # every acknowledged packet survived
    done = firmware_cli("download", again.optical, str(path), "--switch")
    assert done.returncode == 0, done.stderr
    assert f"resuming: ET17 shows 40 of {PACKETS} packets already received" in done.stdout
    assert f"sent {PACKETS - 40 + (0 in sent)}/{PACKETS - 40 + (0 in sent)} packets" \
        in done.stdout
    assert bt01_version(again.client_url) == packed("3.40.02").to_bytes(2, "big")


def test_aes_mode_checks_the_image_mac(start_emulator, tmp_path):
    signed = build(tmp_path, "3.81.00", "--mac-key", AES_KEY)
    forged = build(tmp_path, "3.81.00", "--mac-key", "some-other-key!!")
    checked = firmware_cli("inspect", str(signed), "--mac-key", AES_KEY)
    assert checked.returncode == 0 and checked.stdout.rstrip().endswith("ok")
    emu = start_emulator(*AES)
    refused = firmware_cli("download", emu.optical, str(forged), "--switch")
    assert refused.returncode == 1
    assert "result 5" in refused.stderr and "image MAC" in refused.stderr
    assert bt01_version(emu.client_url) == packed("3.80.01").to_bytes(2, "big")
    done = firmware_cli("download", emu.optical, str(signed), "--erase", "--switch")
    assert done.returncode == 0, done.stderr
    assert bt01_version(emu.client_url) == packed("3.81.00").to_bytes(2, "big")


@pytest.mark.parametrize("args, code, message", [
    (["download", "tcp://127.0.0.1:1", "IMAGE"], 3, "cannot connect"),
    (["download", "http://x", "IMAGE"], 2, "use tcp://"),
    (["download", "tcp://127.0.0.1:1", "/nonexistent.bin"], 2, "cannot read"),
    (["build", "--program-id", "zz", "--version", "1.00.00", "--size", "100", "-o", "x"], 2,
     "not hex"),
    (["build", "--program-id", PROGRAM_ID, "--version", "1.00.00", "--size", "100",
      "--mac-key", "short", "-o", "x"], 2, "AES-128 key has 16"),
])
def test_cli_errors_have_exit_codes_and_messages(tmp_path, args, code, message):
    image = build(tmp_path, "3.20.05")
    done = firmware_cli(*(str(image) if a == "IMAGE" else a for a in args))
    assert done.returncode == code and message in done.stderr
    assert "Traceback" not in done.stderr
