"""Pending tables through the optical port (OPG p.8-12): PED rules, BT04, activation at the exact
instant, BP12-BP15, events 28/29, and state that survives a restart."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import MK, RK, LinkClient
from meter_emu.device import pending
from meter_emu.device.meter import Meter, MeterState
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG
from meter_emu.tables.catalog import PENDING_BASE, et

BT04, BT53, BT54, BT74 = 4, 53, 54, 74
PENDING_BT53 = PENDING_BASE + BT53
PENDING_BT54 = PENDING_BASE + BT54
OK, ERR, ISC, ONP, IAR = b"\x00", b"\x01", b"\x03", b"\x04", b"\x05"
HOUR = 3600


def stime(moment: dt.datetime) -> bytes:
    return bytes([moment.year - 2000, moment.month, moment.day, moment.hour, moment.minute])


def absolute_ped(moment: dt.datetime, self_read=False, demand_reset=False) -> bytes:
    return bytes([0 | self_read << 4 | demand_reset << 5]) + stime(moment)


def relative_ped(weeks=0, days=0, hours=0, minutes=0, seconds=0) -> bytes:
    return bytes([1, weeks, days, hours, minutes, seconds])


OPAQUE_PED = bytes([2, 0xDE, 0xAD, 0xBE, 0xEF, 0x01])


def bt53_with_offset(client, minutes: int) -> bytes:
    """BT53 (DST TIME, DST adjustment, time zone offset INT16 at offset 4) with a new offset."""
    image = bytearray(client.read(BT53))
    image[4:6] = minutes.to_bytes(2, "little", signed=True)
    return bytes(image)


def history(client) -> list[tuple[dt.datetime, int, int, int]]:
    """(time, user, event, argument) of every BT74 entry, oldest first, without the 'Procedure
    Invoked' (9) and 'Table Written To' (10) entries every client action adds, and the load
    profile's 'Unread Entries Exist' (94) the first completed day brings."""
    raw = client.read(BT74)
    entries = []
    for start in range(11, len(raw) - 13, 14):
        e = raw[start:start + 14]
        if any(e) and int.from_bytes(e[10:12], "little") & 0xFFF not in (9, 10, 94):
            entries.append((dt.datetime(2000 + e[0], *e[1:6]),
                            int.from_bytes(e[8:10], "little"),
                            int.from_bytes(e[10:12], "little") & 0xFFF,
                            int.from_bytes(e[12:14], "little")))
    return sorted(entries, key=lambda e: e[0])


def bt04(client, meter):
    """BT04 decoded with the catalog layout (the layout itself is checked byte-wise below)."""
    return CATALOG[BT04].layout_for(meter).parse(client.read(BT04))


def procedure(client, number: int, params: bytes = b"", psn: int = 1) -> bytes:
    assert client.write(7, number.to_bytes(2, "little") + bytes([psn]) + params) == OK
    return client.read(8)


@pytest.fixture
def mk(client):
    client.logon(MK, user_id=7)
    return client


def utc(clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.now(), dt.timezone.utc).replace(tzinfo=None)


def test_pending_tables_are_declared_for_the_documented_configuration_tables():
    pending = {t.label for t in CATALOG.values() if t.pending}
    assert {"BT53", "BT54", "ET05", "ET30", "ET47", "ET61"} <= pending
    assert all(CATALOG[n].writable for n in CATALOG if CATALOG[n].pending)


def test_absolute_ped_activates_at_the_exact_instant(mk, meter, clock):
    before = mk.read(BT53)
    new = bt53_with_offset(mk, 120)
    at = utc(clock).replace(second=0) + dt.timedelta(hours=2)
    assert mk.write(PENDING_BT53, absolute_ped(at) + new) == OK

    assert mk.read(BT53) == before  # nothing changes yet
    assert mk.read(PENDING_BT53) == absolute_ped(at) + new
    status = bt04(mk, meter)
    assert status.basic_pending == {BT53} and status.pending_activations == 1
    record = status.activations[0]
    assert record.table == dict(table_id=BT53, still_pending=1)
    assert record.event["event_code"] == 0 and record.event_storage == stime(at)

    clock.value = at.replace(tzinfo=dt.timezone.utc).timestamp() - 1
    assert mk.read(BT53) == before
    clock.advance(30 * HOUR)  # noticed late: still stamped with its own instant
    assert mk.read(BT53) == new
    status = bt04(mk, meter)
    assert status.basic_pending == set() and status.activations[0].table["still_pending"] == 0
    assert status.last_activation_time == at
    assert history(mk)[-1] == (at, 0xFFFF, 28, PENDING_BT53)
    assert meter.local(clock.now()) - meter.utc(clock.now()) == dt.timedelta(minutes=120)


def test_relative_ped_counts_from_reception(mk, meter, clock):
    received = utc(clock)
    new = bt53_with_offset(mk, -300)
    assert mk.write(PENDING_BT53, relative_ped(days=1, hours=2, minutes=3, seconds=4) + new) == OK
    due = received + dt.timedelta(days=1, hours=2, minutes=3, seconds=4)
    clock.value = due.replace(tzinfo=dt.timezone.utc).timestamp() - 1
    assert mk.read(BT53) != new
    clock.advance(1)
    assert mk.read(BT53) == new
    assert history(mk)[-1][:3] == (due, 0xFFFF, 28)
    assert pending.next_due(meter) is None


def test_opaque_ped_waits_for_bp13_with_the_same_ped(mk, meter, clock):
    new = bt53_with_offset(mk, 30)
    assert mk.write(PENDING_BT53, OPAQUE_PED + new) == OK
    clock.advance(400 * 86400)
    assert mk.read(BT53) != new and pending.next_due(meter) is None

    other = bytes([2, 1, 2, 3, 4, 5])
    assert procedure(mk, 13, other, psn=1)[:4] == bytes([13, 0, 1, 1])  # 1: nothing matched
    assert mk.read(BT53) != new
    assert procedure(mk, 13, OPAQUE_PED, psn=2)[:4] == bytes([13, 0, 2, 0])
    assert mk.read(BT53) == new
    assert history(mk)[-1][1:] == (7, 28, PENDING_BT53)  # logged with the caller's user ID


def test_bp12_activates_everything_and_bp14_clears_everything(mk, meter, clock):
    later = relative_ped(weeks=2)
    calendar = bytearray(mk.read(BT54))
    calendar[-4:] = (123456).to_bytes(4, "little")  # Calendar ID, the last field of BT54
    assert mk.write(PENDING_BT54, later + bytes(calendar)) == OK
    assert mk.write(PENDING_BT53, later + bt53_with_offset(mk, 60)) == OK
    assert procedure(mk, 12, psn=1)[3] == 0
    assert mk.read(BT54) == bytes(calendar)
    assert {e[3] for e in history(mk) if e[2] == 28} == {PENDING_BT53, PENDING_BT54}

    assert mk.write(PENDING_BT53, later + bt53_with_offset(mk, 0)) == OK
    assert procedure(mk, 14, psn=2)[3] == 0
    assert bt04(mk, meter).basic_pending == set()
    assert history(mk)[-1][2:] == (29, PENDING_BT53)
    clock.advance(3 * 7 * 86400)
    assert int.from_bytes(mk.read(BT53)[4:6], "little", signed=True) == 60  # never activated


def test_bp15_clears_only_the_matching_ped_and_keeps_the_data(mk, meter, clock):
    new = bt53_with_offset(mk, 45)
    ped = relative_ped(hours=5)
    assert mk.write(PENDING_BT53, ped + new) == OK
    assert procedure(mk, 15, relative_ped(hours=6), psn=1)[3] == 1
    assert bt04(mk, meter).basic_pending == {BT53}
    assert procedure(mk, 15, ped, psn=2)[3] == 0
    assert bt04(mk, meter).basic_pending == set()
    assert mk.read(PENDING_BT53) == ped + new  # "the data ... is not modified" (OPG p.12)
    assert history(mk)[-1][1:] == (7, 29, PENDING_BT53)
    clock.advance(6 * HOUR)
    assert mk.read(BT53) != new


def test_partial_pending_writes_and_reads_count_the_ped_but_not_the_offset(mk, meter, clock):
    ped = relative_ped(hours=1)
    live = mk.read(BT53)
    assert mk.write(PENDING_BT53, ped + (90).to_bytes(2, "little"), offset=4) == OK
    expected = live[:4] + (90).to_bytes(2, "little")
    assert mk.read(PENDING_BT53) == ped + expected
    # OPG p.9: 4 bytes from offset 3 of a pending table: count 10, offset 3
    assert mk.read(PENDING_BT53, 3, 10) == ped + expected[3:6] + b"\0"  # BT53 ends at 6
    # a second partial write edits the same pending image and replaces the PED
    ped2 = relative_ped(hours=2)
    assert mk.write(PENDING_BT53, ped2 + b"\x0f", offset=3) == OK
    assert mk.read(PENDING_BT53) == ped2 + expected[:3] + b"\x0f" + expected[4:]
    assert bt04(mk, meter).pending_activations == 1


def test_pending_writes_are_checked(mk, meter, clock):
    live = mk.read(BT53)
    assert mk.write(PENDING_BT53, bytes([1, 0, 0])) == ERR  # shorter than a PED
    assert mk.write(PENDING_BT53, bytes([3, 0, 0, 0, 0, 0]) + live) == ERR  # event code 3
    assert mk.write(PENDING_BT53, bytes([0, 26, 13, 1, 0, 0]) + live) == ERR  # month 13
    assert mk.write(PENDING_BASE + 1, relative_ped(hours=1) + b"x") == IAR  # BT01 is not pendable
    assert mk.read(PENDING_BASE + 1)[:1] == IAR
    assert bt04(mk, meter).pending_activations == 0


def test_read_only_key_cannot_write_pending_tables(client, meter):
    client.logon(RK)
    assert client.write(PENDING_BT53, relative_ped(hours=1) + client.read(BT53)) == ISC
    assert client.read(BT04)[:1] == ISC  # BT04: MK and PK only (OPG p.11)


def test_slots_fill_up_and_finished_ones_are_reused(mk, meter, clock):
    pendable = [n for n, t in CATALOG.items() if t.pending]
    slots = meter.dims.pending_tables
    assert len(pendable) > slots
    for number in pendable[:slots]:
        assert mk.write(PENDING_BASE + number, relative_ped(hours=1)
                        + meter.table_bytes(number, clock.now())) == OK
    extra = pendable[slots]
    image = meter.table_bytes(extra, clock.now())
    assert mk.write(PENDING_BASE + extra, relative_ped(hours=1) + image) == ONP
    clock.advance(HOUR)
    assert bt04(mk, meter).pending_activations == slots  # records stay, no longer pending
    assert mk.write(PENDING_BASE + extra, relative_ped(hours=1) + image) == OK
    assert bt04(mk, meter).pending_activations == slots


def test_bt04_layout_bytes(mk, meter, clock):
    """OPG p.10-11: bitmaps (BT00.13 + BT00.14 bytes), STIME_DATE, count, 8-byte records."""
    ped = relative_ped(minutes=10)
    assert mk.write(PENDING_BASE + et(30), ped + meter.table_bytes(et(30), clock.now())) == OK
    raw = mk.read(BT04)
    d = meter.dims
    assert len(raw) == d.basic_tables_bytes + d.extended_tables_bytes + 6 + 8 * d.pending_tables
    ext = raw[d.basic_tables_bytes:d.basic_tables_bytes + d.extended_tables_bytes]
    assert ext[30 // 8] == 1 << (30 % 8)
    records = d.basic_tables_bytes + d.extended_tables_bytes + 6
    assert raw[records - 1] == 1
    assert raw[records:records + 8] == ped + (et(30) | 1 << 12).to_bytes(2, "little")


def test_activation_crossing_a_restart(mk, meter, clock):
    new = bt53_with_offset(mk, 180)
    at = utc(clock).replace(second=0) + dt.timedelta(hours=3)
    assert mk.write(PENDING_BT53, absolute_ped(at) + new) == OK
    saved = meter.state.to_doc()

    # the process is gone for a day; a new one comes up with the saved state
    clock.advance(24 * HOUR)
    again = Meter(load_profile(), MeterState.from_doc(saved))
    client = LinkClient(optical_protocol(again, clock))
    client.logon(MK)
    assert client.read(BT53) == new
    assert history(client)[-1] == (at, 0xFFFF, 28, PENDING_BT53)
