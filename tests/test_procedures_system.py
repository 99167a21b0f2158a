"""System procedures (procedures/system.py) through the optical port: BT07 requests, BT08
answers, and their effects in the tables (BT03, ET02, ET04, ET36, ET55) and the history log."""

from __future__ import annotations

import hashlib

import pytest

from conftest import bt07, MK, PK, RK
from meter_emu.device import conditions
from meter_emu.procedures import PROCEDURES
from meter_emu.procedures.catalog import ep
from meter_emu.device.keys import oma_key, provisioned_key
from meter_emu.procedures.system import feature_active
from meter_emu.tables.catalog import et
from meter_emu.tables.extended import log_entries, log_entry_size

COMPLETED, NOT_COMPLETED, INVALID, CONFLICT, NO_AUTH = 0, 1, 2, 3, 5
QUIET = {9, 10}  # Procedure Invoked / Table Written To: the mechanism's, not the procedure's



class Caller:
    """Runs EP n with a fresh PSN and returns (result code, response data) from BT08."""

    def __init__(self, client):
        self.client = client
        self.psn = 0

    def logon(self, password: bytes) -> "Caller":
        self.client.logon(password)
        return self

    def __call__(self, n: int, params: bytes = b"") -> tuple[int, bytes]:
        self.psn = self.psn % 250 + 1
        assert self.client.write(7, bt07(ep(n), self.psn, params)) == b"\x00"
        bt08 = self.client.read(8)
        assert int.from_bytes(bt08[:2], "little") == ep(n) and bt08[2] == self.psn
        return bt08[3], bt08[4:]


@pytest.fixture
def call(client):
    return Caller(client).logon(MK)


def logged(meter) -> list[tuple[int, int]]:
    """(event, argument) of the history log, without the mechanism's 9/10 entries."""
    return [(e[3], e[4]) for e in meter.state.history.entries if e[3] not in QUIET]


def u16(raw: bytes, at: int = 0) -> int:
    return int.from_bytes(raw[at:at + 2], "little")


def refused_to(call, password: bytes, n: int, params: bytes = b"") -> int:
    call.logon(password)
    return call(n, params)[0]


# ---- EP00 Self Calibration -----------------------------------------------------------------


def test_ep00_records_each_calibration(call, meter, clock):
    result, data = call(0)
    assert result == COMPLETED and u16(data) == 1
    when = meter.utc(clock.now())
    assert data[2:8] == bytes([when.year - 2000, when.month, when.day, when.hour, when.minute,
                               when.second])
    clock.advance(60)
    result, data = call(0)
    assert result == COMPLETED and u16(data) == 2
    assert u16(call(29)[1], 10) == 2  # EP29: self calibrations since the last reset


@pytest.mark.parametrize("password", [PK, RK])
def test_ep00_is_for_the_unique_key(call, password):
    assert refused_to(call, password, 0) == NO_AUTH


# ---- EP01 Flash Refresh --------------------------------------------------------------------


def test_ep01_restarts_with_a_watchdog_reset(call, meter):
    assert call(1) == (COMPLETED, bytes(12))
    assert logged(meter) == [(1, 0), (2, 4)]  # power down, power up (reset cause 4)
    assert "power_failure" not in meter.state.alarms
    assert not PROCEDURES[ep(1)].idempotent


def test_ep01_needs_the_unique_key(call):
    assert refused_to(call, PK, 1) == NO_AUTH


# ---- EP06 / EP37 log dimensions --------------------------------------------------------------

ET31_ID, ET32_ID, ET41_ID, ET45_ID = 0x081F, 0x0820, 0x0829, 0x082D


def et36_record(client, number: int) -> tuple[int, int]:
    """(entry size, current entries) of ET{number} in ET36."""
    raw = client.read(et(36))
    for i in range(raw[0]):
        if u16(raw, 1 + 17 * i) & 0x7FF == number:
            return u16(raw, 3 + 17 * i), u16(raw, 7 + 17 * i)
    raise AssertionError(f"ET{number} is not in ET36")


def test_ep06_sets_current_entries_and_announces_the_change(call, client, meter):
    sequence = meter.mep_sequence
    entry_size, _ = et36_record(client, 31)
    result, data = call(6, ET31_ID.to_bytes(2, "little") + (5).to_bytes(2, "little"))
    assert result == COMPLETED
    assert (u16(data), u16(data, 2), u16(data, 4)) == (ET31_ID, entry_size, 5)
    assert log_entries(meter, 31, 2) == 5
    assert client.read(et(4), 116, 1) == b"\x01"  # ET04 IDT Version + 1
    assert meter.mep_sequence == sequence + 25  # MEP p.55
    assert client.read(3)[7] & 0x01  # BT03 Dimension Change
    assert logged(meter) == [(88, 2054)]
    call(6, ET31_ID.to_bytes(2, "little") + (3).to_bytes(2, "little"))
    assert client.read(et(4), 116, 1) == b"\x02"  # every execution counts (MEP p.65)
    assert logged(meter) == [(88, 2054), (88, 2054)]


@pytest.mark.xfail(strict=True, reason="the log layouts (ET31, ET32, ET38, ET45, ET75, ET81) "
                   "must size their arrays with tables.extended.log_entries/log_entry_size")
def test_ep06_and_ep37_resize_the_log_tables_and_et36(call, client):
    call(6, ET31_ID.to_bytes(2, "little") + (5).to_bytes(2, "little"))
    size, entries = et36_record(client, 31)
    assert entries == 5 and len(client.read(et(31))) == 6 + 5 * size
    call(37, ET45_ID.to_bytes(2, "little") + (100).to_bytes(2, "little")
         + (3).to_bytes(2, "little"))
    assert et36_record(client, 45) == (100, 3) and len(client.read(et(45))) == 6 + 300


@pytest.mark.parametrize("params", [
    ET41_ID.to_bytes(2, "little") + b"\x01\x00",  # ET41: only EP32 sets its entries
    (0x0821).to_bytes(2, "little") + b"\x01\x00",  # ET33 is no adjustable log
    (0x001F).to_bytes(2, "little") + b"\x01\x00",  # BT31, not ET31
    ET31_ID.to_bytes(2, "little") + (256).to_bytes(2, "little"),  # above ET36 Max Entries
    ET45_ID.to_bytes(2, "little") + (254).to_bytes(2, "little"),  # ET45: at most 253
    ET31_ID.to_bytes(2, "little"),  # entries missing
])
def test_ep06_refuses_invalid_parameters(call, client, meter, params):
    assert call(6, params)[0] == INVALID
    assert client.read(et(4), 116, 1) == b"\x00" and not logged(meter)


def test_ep06_refuses_what_the_log_memory_cannot_hold(call, client, meter):
    # 131,072 bytes: ET31 255 x 306, ET32 8 x 525 and ET38 10 x 35 leave room for 90 ET45
    # entries of 525 bytes, not 100
    assert call(6, ET31_ID.to_bytes(2, "little") + (255).to_bytes(2, "little"))[0] == COMPLETED
    assert call(6, ET45_ID.to_bytes(2, "little") + (100).to_bytes(2, "little"))[0] == CONFLICT
    assert log_entries(meter, 45, 0) == 0 and client.read(et(4), 116, 1) == b"\x01"
    assert call(6, ET45_ID.to_bytes(2, "little") + (90).to_bytes(2, "little"))[0] == COMPLETED


def test_ep06_is_refused_to_the_read_only_key(call):
    assert refused_to(call, RK, 6, ET31_ID.to_bytes(2, "little") + b"\x01\x00") == NO_AUTH


def ep37_params(table: int, size: int, entries: int) -> bytes:
    return table.to_bytes(2, "little") + size.to_bytes(2, "little") + entries.to_bytes(2, "little")


def test_ep37_sets_entry_size_and_entries(call, client, meter):
    result, data = call(37, ep37_params(ET45_ID, 100, 20))
    assert result == COMPLETED and (u16(data), u16(data, 2), u16(data, 4)) == (ET45_ID, 100, 20)
    assert log_entry_size(meter, 45, 525) == 100 and log_entries(meter, 45, 0) == 20
    assert client.read(et(4), 116, 1) == b"\x01"
    assert logged(meter) == [(88, 2085)]


@pytest.mark.parametrize("params", [
    ep37_params(ET31_ID, 100, 2),  # ET31's entry size follows the demand set-up (EP32)
    ep37_params(ET32_ID, 15, 2),  # smaller than one meaningful entry
    ep37_params(ET32_ID, 526, 2),  # larger than 8 + ET11.5
    ep37_params(ET45_ID, 100, 254),
])
def test_ep37_refuses_invalid_parameters(call, meter, params):
    assert call(37, params)[0] == INVALID
    assert log_entry_size(meter, 32, 525) == 525 and not logged(meter)


def test_ep37_refuses_what_the_log_memory_cannot_hold(call, meter):
    assert call(37, ep37_params(ET32_ID, 525, 255))[0] == CONFLICT  # 133,875 bytes
    assert call(37, ep37_params(ET32_ID, 200, 255))[0] == COMPLETED  # 51,000 bytes


# ---- EP07 Activate Feature -------------------------------------------------------------------


def test_ep07_switches_features_and_answers_the_bitmap(call, meter):
    assert feature_active(meter, "prepay")
    assert call(7, b"\x00\x00") == (COMPLETED, b"\x1e" + bytes(11))  # prepay off
    assert not feature_active(meter, "prepay")
    assert call(7, b"\x04\x00")[1][:2] == b"\x0e\x00"  # load-side voltage detection off
    assert call(7, b"\x00\x01")[1][:2] == b"\x0f\x00"  # prepay on again
    assert feature_active(meter, "prepay") and not feature_active(meter,
                                                                    "load_side_voltage_detection")


@pytest.mark.parametrize("params", [b"\x05\x01", b"\x00\x02", b"\x00"])
def test_ep07_refuses_unknown_features_and_actions(call, meter, params):
    assert call(7, params)[0] == INVALID
    assert all(feature_active(meter, name) for name in ("prepay", "time_based_relay"))


def test_ep07_is_refused_to_the_read_only_key(call):
    assert refused_to(call, RK, 7, b"\x00\x00") == NO_AUTH


# ---- EP16 Change System Clock by Delta ------------------------------------------------------


def delta(seconds: int) -> bytes:
    return seconds.to_bytes(4, "little", signed=True)


def test_ep16_moves_the_clock_and_logs_old_and_new_time(call, meter, clock):
    before = meter.utc_seconds(clock.now())
    assert call(16, delta(3600))[0] == COMPLETED
    assert meter.utc_seconds(clock.now()) == before + 3600
    entries = [e for e in meter.state.history.entries if e[3] in (3, 4)]
    assert [(e[3], e[4]) for e in entries] == [(3, 3600), (4, 3600)]
    assert entries[1][0] - entries[0][0] == 3600  # stamped with the old, then the new time
    assert call(16, delta(-60))[0] == COMPLETED
    assert meter.utc_seconds(clock.now()) == before + 3540
    assert logged(meter)[-2:] == [(3, 0xFFC4), (4, 0xFFC4)]  # -60 as INT16
    call(16, delta(100_000))  # a day ahead: the load profile's first block completes, too (94)
    assert (4, 0x7FFF) in logged(meter)[-2:]  # the argument saturates
    assert not PROCEDURES[ep(16)].idempotent


@pytest.mark.parametrize("params", [delta(0), b"\x10\x0e", delta(-30 * 365 * 86400)])
def test_ep16_refuses_invalid_deltas(call, meter, clock, params):
    before = meter.utc_seconds(clock.now())
    assert call(16, params)[0] == INVALID
    assert meter.utc_seconds(clock.now()) == before and not logged(meter)


def test_ep16_read_only_key_only_while_et04_allows_it(call, client, meter, clock):
    assert refused_to(call, PK, 16, delta(10)) == COMPLETED
    assert refused_to(call, RK, 16, delta(10)) == COMPLETED  # ET04.71.0 = 0
    call.logon(MK)
    assert client.write(et(4), b"\x01", offset=71) == b"\x00"  # RK BP10 + EP16 access disabled
    before = meter.utc_seconds(clock.now())
    assert refused_to(call, RK, 16, delta(10)) == NO_AUTH
    assert meter.utc_seconds(clock.now()) == before


# ---- EP20 Change OMA Key ---------------------------------------------------------------------


def test_ep20_stores_the_key_and_answers_a_check_value(call, meter):
    key = bytes(range(1, 13))
    result, data = call(20, b"\x00" + key)
    assert result == COMPLETED
    assert data[:6] == b"\x00\x0c" + hashlib.sha256(key).digest()[:4] and key not in data
    assert provisioned_key(meter, 0, 12) == key and provisioned_key(meter, 1, 12) is None
    assert oma_key(meter, 0) == key  # RC4 mode (ET04.127 = 0): the 12-byte key is in use
    assert oma_key(meter, 1) == meter.profile.oma_key() == b"OMA-emu-dflt"
    aes = bytes(range(16, 32))
    assert call(20, b"\x01" + aes)[1][:2] == b"\x01\x10"
    assert provisioned_key(meter, 1, 16) == aes
    assert oma_key(meter, 1) == b"OMA-emu-dflt"  # the AES key waits for AES mode
    assert logged(meter) == [(108, 0), (108, 1)]


@pytest.mark.parametrize("params", [b"\x02" + bytes(range(1, 13)), b"\x00" + bytes(range(1, 14)),
                                    b"\x00" + bytes(12), b""])
def test_ep20_refuses_invalid_slots_and_keys(call, meter, params):
    assert call(20, params)[0] == INVALID
    assert not meter.state.subsystems.get("oma_keys") and not logged(meter)
    assert oma_key(meter, 0) == b"OMA-emu-dflt"


@pytest.mark.parametrize("password", [PK, RK])
def test_ep20_is_for_the_unique_key(call, meter, password):
    assert refused_to(call, password, 20, b"\x00" + bytes(range(1, 13))) == NO_AUTH
    assert provisioned_key(meter, 0, 12) is None


# ---- EP27 Add/Remove Group ID ----------------------------------------------------------------

ADD, REMOVE = 1, 0


def group(action: int, group_id: int) -> bytes:
    return bytes([action]) + group_id.to_bytes(2, "little")


def et55_groups(client) -> list[int]:
    raw = client.read(et(55), 24, 20)
    return [u16(raw, 2 * i) for i in range(10)]


def test_ep27_adds_and_removes_groups_in_et55(call, client, meter):
    assert call(27, group(ADD, 0x0102)) == (COMPLETED, b"\x01" + bytes(11))
    assert call(27, group(ADD, 0x0305))[1][0] == 2
    assert et55_groups(client) == [0x0102, 0x0305] + [0] * 8
    assert call(27, group(ADD, 0x0102))[1][0] == 2  # already a member: nothing changes
    assert call(27, group(REMOVE, 0x0102))[1][0] == 1
    assert et55_groups(client) == [0x0305] + [0] * 9
    assert logged(meter) == [(109, 0x0102), (109, 0x0305), (109, 0x0102)]


def test_ep27_group_table_full_and_not_a_member(call, client):
    for n in range(10):
        assert call(27, group(ADD, 0x0100 + n))[0] == COMPLETED
    assert call(27, group(ADD, 0x0200)) == (CONFLICT, bytes(12))  # ET11.18 = 10 slots
    assert call(27, group(REMOVE, 0x0200))[0] == NOT_COMPLETED
    assert et55_groups(client) == [0x0100 + n for n in range(10)]


@pytest.mark.parametrize("params", [group(ADD, 0), group(ADD, 0x01FF), group(ADD, 0xFF01),
                                    group(2, 0x0102), b"\x01\x02"])
def test_ep27_refuses_invalid_group_ids_and_actions(call, client, params):
    assert call(27, params)[0] == INVALID
    assert et55_groups(client) == [0] * 10


def test_a_client_write_of_et55_keeps_the_groups(call, client):
    call(27, group(ADD, 0x0102))
    assert client.write(et(55), bytes(28), offset=24) == b"\x00"
    assert et55_groups(client)[0] == 0x0102


def test_ep27_is_refused_to_the_read_only_key(call):
    assert refused_to(call, RK, 27, group(ADD, 0x0102)) == NO_AUTH


# ---- EP28 Enable/Disable Battery -------------------------------------------------------------


def test_ep28_switches_the_et02_battery_flag(call, client, meter):
    assert client.read(et(2))[2] & 1  # enabled on a new meter
    assert call(28, b"\x00")[0] == COMPLETED
    assert not client.read(et(2))[2] & 1
    assert call(28, b"\x00")[0] == COMPLETED  # already disabled: no second event
    assert call(28, b"\x01")[0] == COMPLETED
    assert client.read(et(2))[2] & 1
    assert logged(meter) == [(110, 0), (110, 1)]


def test_ep28_refuses_other_values_and_the_read_only_key(call, client):
    assert call(28, b"\x02")[0] == INVALID
    assert refused_to(call, RK, 28, b"\x00") == NO_AUTH
    assert client.read(et(2))[2] & 1


# ---- EP29 / EP31 diagnostic counters ---------------------------------------------------------


def counters(call) -> list[int]:
    result, data = call(29)
    assert result == COMPLETED
    return [u16(data, 2 * i) for i in range(6)]


def test_ep29_counts_events_checks_and_calibrations_ep31_resets_them(call, meter, clock):
    call(0)
    conditions.begin(meter, "clock_error", clock.now())
    call(42)
    before = meter.state.history_sequence
    values = counters(call)
    assert values[2] == before > 0  # every event since the meter was made
    assert values[4:] == [1, 1]  # one self check found a fault, one calibration
    reset = meter.state.history_sequence
    assert call(31) == (COMPLETED, bytes(12))
    call(1)  # logs power down and up
    before = meter.state.history_sequence
    values = counters(call)
    assert values[2] == before - reset >= 2
    assert values[4:] == [0, 0]


def test_ep29_counts_procedures_table_writes_and_wrong_passwords(call, client):
    assert call(31)[0] == COMPLETED  # counted, then zeroed by its own effect
    assert client.write(2051, b"SERIAL".ljust(30, b"\0")) == b"\x00"  # ET03
    for _ in range(2):
        client.request(b"\x51" + b"wrong".ljust(20, b"\0"))
    assert client.request(b"\x51" + MK) == b"\x00"
    values = counters(call)  # EP29 itself is the one procedure; BT07 is not a table write
    assert (values[0], values[1], values[3]) == (1, 1, 2)
    call(31)
    assert counters(call)[0:2] == [1, 0]


def test_ep29_saturates_at_65535(call, meter):
    for _ in range(70_000):
        meter.count("tables_written")
    assert counters(call)[1] == 0xFFFF


def test_ep29_is_readable_with_rk_ep31_is_not(call, meter):
    call.logon(RK)
    assert counters(call)[0] == 1
    assert call(31)[0] == NO_AUTH
    assert counters(call)[0] == 3  # EP29, the refused EP31, EP29


# ---- EP35 Change Test Mode -------------------------------------------------------------------


def test_ep35_mode_shows_in_bt03_and_logs_its_events(call, client, meter):
    assert client.read(3)[0] == 0x01  # metering mode
    assert call(35, b"\x01")[0] == COMPLETED
    assert client.read(3)[0] == 0x02  # test mode
    assert call(35, b"\x02")[0] == COMPLETED
    assert client.read(3)[0] == 0x04  # meter shop mode
    assert call(35, b"\x02")[0] == COMPLETED  # no change, no event
    assert call(35, b"\x00")[0] == COMPLETED
    assert client.read(3)[0] == 0x01
    assert logged(meter) == [(30, 0), (31, 0), (34, 0), (35, 0)]


def test_ep35_refuses_unknown_modes_and_the_read_only_key(call, client):
    assert call(35, b"\x03")[0] == INVALID
    assert refused_to(call, RK, 35, b"\x01") == NO_AUTH
    assert client.read(3)[0] == 0x01


# ---- EP42 Execute Self Check -----------------------------------------------------------------


def test_ep42_reports_fault_conditions(call, meter, clock):
    assert call(42) == (COMPLETED, bytes(12))
    assert not logged(meter)
    conditions.begin(meter, "ram_failure", clock.now())
    conditions.begin(meter, "software_crc_error", clock.now())
    result, data = call(42)
    assert result == COMPLETED and data[0] == 0x21  # bit 0 RAM, bit 5 software CRC
    assert logged(meter)[-1] == (38, 0x21)


def test_ep42_is_refused_to_the_read_only_key(call):
    assert refused_to(call, RK, 42) == NO_AUTH


# ---- EP43 Acknowledge Prepay Warning ---------------------------------------------------------


def test_ep43_raises_prepay_warning_acknowledged(call, client, meter):
    assert call(43)[0] == COMPLETED
    assert client.read(3)[6] & 0x20  # BT03 byte 6 bit 5 (OPG p.46)
    assert call(43)[0] == COMPLETED
    assert logged(meter) == [(85, 0)]  # once while the bit is set


def test_ep43_is_refused_to_the_read_only_key(call, client):
    assert refused_to(call, RK, 43) == NO_AUTH
    assert not client.read(3)[6] & 0x20


def test_every_system_procedure_is_declared_with_its_effect():
    for n in (0, 1, 6, 7, 16, 20, 27, 28, 29, 31, 35, 37, 42, 43):
        proc = PROCEDURES[ep(n)]
        assert proc.effect and proc.provenance.source, proc.label
