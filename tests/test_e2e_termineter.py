"""End to end: the real termineter 1.0.6 CLI against ``meter-emu run`` over TCP and a pty.

Each test starts the emulator as a subprocess (free port, ready file), drives termineter through
stdin with a private HOME, and checks concrete values in its output. BT74 (1411 bytes) is larger
than the 2 x 512-byte packets termineter negotiates, so the history log is read with the c1218
library and a bigger packet size.
"""

from __future__ import annotations

import datetime as dt

import pytest

try:  # tests/ as a package or as a plain directory on sys.path
    from . import e2e
except ImportError:
    import e2e

start_emulator = e2e.start_emulator  # the fixture, used by name

BT01_DEFAULT = (
    b"NES " + b"OSGP1PH "                      # manufacturer, model (space-padded)
    + bytes([0x10, 0x00])                      # hardware 1.00.00
    + bytes([0x31, 0x55])                      # firmware 3.10.21
    + bytes.fromhex("0000000012345678")        # serial number, BCD(8)
)


def assert_no_errors(out: str) -> None:
    assert not e2e.error_lines(out), f"termineter reported errors:\n{out}"


def test_get_info_over_socket(start_emulator, tmp_path):
    emu = start_emulator()
    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url) + ["run get_info"])

    assert_no_errors(out)
    assert "Successfully connected and the device is responding" in out
    info = e2e.info_fields(out)
    assert info.get("Manufacturer") == "NES", out
    assert info.get("Model") == "OSGP1PH", out
    assert info.get("Device Type") == "Electric", out
    assert info.get("Mode Flags") == "Metering", out
    # BT03/BT05 need the password: their lines prove the MK was accepted
    assert "Device ID" in info, out


def test_read_bt01_shows_profile_identity(start_emulator, tmp_path):
    emu = start_emulator()
    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url)
                         + e2e.read_table_cmds(1))
    assert_no_errors(out)
    assert "[*] Read 24 bytes" in out, out
    dumps = e2e.read_dumps(out)
    assert dumps == [BT01_DEFAULT], out
    assert "4e 45 53 20 4f 53 47 50  31 50 48 20 10 00 31 55" in out
    assert "00 00 00 00 12 34 56 78" in out

    # The same read against a meter whose profile was overridden: the values are the profile's.
    other = start_emulator("--set", "identity.serial_number=0000000087654321",
                           "--set", "identity.model=E2EMODEL")
    out = e2e.termineter(tmp_path, e2e.termineter_preamble(other.client_url)
                         + e2e.read_table_cmds(1))
    assert_no_errors(out)
    expected = (b"NES " + b"E2EMODEL" + bytes([0x10, 0x00, 0x31, 0x55])
                + bytes.fromhex("0000000087654321"))
    assert e2e.read_dumps(out) == [expected], out


def test_bp10_sets_clock_and_logs_time_changed(start_emulator, tmp_path):
    emu = start_emulator()
    target = dt.datetime(2030, 6, 15, 12, 34, 56)
    params = e2e.bp10_params(target, set_mask=0x03).hex()
    assert params == "031e060f0c223800"
    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url, user_id=5) + [
        "use run_procedure",
        "set PROC_NUMBER 10",
        f"set PARAMS {params}",
        "run",
        "back",
    ] + e2e.read_table_cmds(52))

    assert_no_errors(out)
    assert "Received response from procedure: Procedure completed" in out, out
    dumps = e2e.read_dumps(out)
    assert len(dumps) == 1 and len(dumps[0]) == 7, out
    bt52 = dumps[0]
    assert bt52[:5] == bytes([0x1E, 0x06, 0x0F, 0x0C, 0x22]), bt52.hex(" ")
    clock = e2e.ltime_date(bt52)
    assert target <= clock <= target + dt.timedelta(seconds=30), clock
    assert bt52[6] & 0x10, "BT52 time qualifier: GMT flag"

    log = e2e.parse_bt74(e2e.read_table_lib(emu.client_url, 74))
    changed = log.events(e2e.EVENT_TIME_CHANGED)
    assert len(changed) == 1, log
    assert changed[0].user_id == 5, changed
    # stamped with the old time (the meter's clock before BP10 ran, i.e. about now)
    assert changed[0].time is not None and changed[0].time.year < 2030, changed
    assert log.valid_entries == len(log.entries) >= 1
    assert log.last_sequence == max(e.sequence for e in log.entries)


def test_get_info_over_pty(start_emulator, tmp_path):
    emu = start_emulator(optical="pty")
    assert emu.optical.startswith("/dev/"), emu.ready
    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url) + ["run get_info"])

    assert_no_errors(out)
    info = e2e.info_fields(out)
    assert info.get("Manufacturer") == "NES", out
    assert info.get("Model") == "OSGP1PH", out
    assert info.get("Device Type") == "Electric", out
    assert info.get("Mode Flags") == "Metering", out


@pytest.mark.parametrize("password_hex", [e2e.ZERO_PASSWORD_HEX, "0123456789abcdef" * 2 + "01234567"],
                         ids=["zero-password", "wrong-hex-password"])
def test_wrong_password(start_emulator, tmp_path, password_hex):
    emu = start_emulator()
    user_id = 7

    before = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url)
                            + e2e.read_table_cmds(3))
    assert_no_errors(before)
    assert not e2e.read_dumps(before)[0][5] & 0x01, "invalid-password alarm set before the test"

    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url, password_hex,
                                                           user_id=user_id) + ["run get_info"])
    info = e2e.info_fields(out)
    # BT00/BT01 are open: identity still shows
    assert info.get("Manufacturer") == "NES", out
    assert info.get("Model") == "OSGP1PH", out
    # BT03/BT05 need a key: their lines are missing
    assert "Mode Flags" not in info, out
    assert "Device ID" not in info, out
    assert "Could not read the necessary tables" not in out, out

    after = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url)
                           + e2e.read_table_cmds(3))
    assert_no_errors(after)
    bt03 = e2e.read_dumps(after)[0]
    assert len(bt03) == 10, bt03.hex(" ")
    assert bt03[5] & 0x01, f"BT03 offset 5 bit 0 (Invalid Password) not set: {bt03.hex(' ')}"

    log = e2e.parse_bt74(e2e.read_table_lib(emu.client_url, 74))
    invalid = log.events(e2e.EVENT_INVALID_PASSWORD)
    assert len(invalid) == 1, log
    assert invalid[0].user_id == user_id, invalid
    assert invalid[0].argument == 0


def test_read_only_key_cannot_write(start_emulator, tmp_path):
    emu = start_emulator()
    old = b"UTIL-0000001".ljust(30, b"\0")
    new = b"E2E-NEW-SERIAL".ljust(30, b"\0")
    write = ["use write_table", f"set TABLE_ID {e2e.ET03}", f"set DATA {new.hex()}",
             "set OFFSET 0", "run", "back"]

    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url, e2e.RK_HEX) + write)
    assert ("Caught C1218WriteTableError: 'could not write data to the table, error: isc "
            "(Insufficient Security Clearance)'") in out, out
    assert "Successfully Wrote Data" not in out, out
    assert "Table Write Verification Failed" in out, out
    verify = e2e.hexdumps(out)[-1]
    assert len(verify) == e2e.ET03_SIZE and verify[:30] == old, verify.hex(" ")

    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url, e2e.RK_HEX)
                         + e2e.read_table_cmds(e2e.ET03))
    assert_no_errors(out)
    assert e2e.read_dumps(out)[0][:30] == old, out

    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url, e2e.MK_HEX) + write)
    assert_no_errors(out)
    assert "Successfully Wrote Data" in out, out
    assert "Table Write Verification Passed" in out, out

    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url, e2e.RK_HEX)
                         + e2e.read_table_cmds(e2e.ET03))
    assert_no_errors(out)
    et03 = e2e.read_dumps(out)[0]
    assert len(et03) == e2e.ET03_SIZE and et03[:30] == new, et03.hex(" ")


def test_missing_table_answers_iar(start_emulator, tmp_path):
    emu = start_emulator()
    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url)
                         + e2e.read_table_cmds(99, 1))
    assert ("could not read table id: 99, error: iar (Inappropriate Action Requested)"
            in out), out
    assert "[*] Read" in out, "the meter must still answer the next read"
    assert e2e.read_dumps(out) == [BT01_DEFAULT], out


def test_bp10_and_ep03_through_run_procedure_show_in_the_history_log(start_emulator, tmp_path):
    """The issue's acceptance path: termineter's run_procedure for BP10 and for EP03 (the
    manufacturer flag is termineter's STD_VS_MFG), then BT74 read through the optical port."""
    emu = start_emulator()
    # a wrong password first, so EP03 has an alarm to clear (BT03 byte 5 bit 0)
    e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url, e2e.ZERO_PASSWORD_HEX)
                   + ["run get_info"])
    with e2e.c1218_session(emu.client_url) as conn:
        assert conn.get_table_data(3)[5] & 0x01
    target = dt.datetime(2031, 3, 4, 5, 6, 7)
    out = e2e.termineter(tmp_path, e2e.termineter_preamble(emu.client_url, user_id=9) + [
        "use run_procedure",
        "set PROC_NUMBER 10",
        f"set PARAMS {e2e.bp10_params(target).hex()}",
        "run",
        "set PROC_NUMBER 3",
        "set PARAMS 0000000001",  # EP03's mask in BT03's layout: byte 5 bit 0 only
        "set STD_VS_MFG true",
        "run",
        "back",
    ])
    assert_no_errors(out)
    assert out.count("Received response from procedure: Procedure completed") == 2, out

    with e2e.c1218_session(emu.client_url) as conn:
        assert not conn.get_table_data(3)[5] & 0x01  # EP03 cleared the alarm
        log = e2e.parse_bt74(conn.get_table_data(74))
    mine = [(e.event, e.argument) for e in log.entries if e.user_id == 9]
    assert [m for m in mine if m[0] != 12] == [(3, 0), (4, 0), (9, 10), (9, 2048 + 3)], log
    assert mine[-1] == (12, 0), log  # termineter logged off: Communication Terminated Normally
    assert 72 in [e.event for e in log.entries if e.user_id != 9]  # the wrong password
