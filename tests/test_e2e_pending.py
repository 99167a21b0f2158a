"""End to end: a pending BT54 written through the optical port of a running ``meter-emu run``
activates on time under a 3600x clock and logs event 28; a pending table whose instant passes
while the emulator is down activates at that instant when it comes back."""

from __future__ import annotations

import datetime as dt

try:  # tests/ as a package or as a plain directory on sys.path
    from . import e2e
except ImportError:
    import e2e

start_emulator = e2e.start_emulator  # the fixture, used by name

PENDING_BT54 = 4096 + 54
EVENT_PENDING_ACTIVATED = 28


def _meter_utc(conn) -> dt.datetime:
    return e2e.ltime_date(conn.get_table_data(52))


def _calendar_with_id(conn, calendar_id: int) -> bytes:
    calendar = bytearray(conn.get_table_data(54))
    calendar[-4:] = calendar_id.to_bytes(4, "little")  # Calendar ID ends BT54
    return bytes(calendar)


def test_relative_pending_calendar_activates_under_a_fast_clock(start_emulator):
    emu = start_emulator("--clock-rate", "3600")  # one virtual hour per second
    with e2e.c1218_session(emu.client_url, e2e.MK, user_id=5) as conn:
        calendar = _calendar_with_id(conn, 0x0BADCAFE)
        before = _meter_utc(conn)
        conn.set_table_data(PENDING_BT54, bytes([1, 0, 0, 2, 0, 0]) + calendar)  # in 2 hours
        after = _meter_utc(conn)
        assert conn.get_table_data(54) != calendar
    status = e2e.read_table_lib(emu.client_url, 4)
    assert status[10 + 13 + 5] == 1  # one activation record

    def activated():
        return e2e.read_table_lib(emu.client_url, 54) == calendar

    e2e.wait_for(activated, 10, "the BT54 activation")
    log = e2e.parse_bt74(e2e.read_table_lib(emu.client_url, 74))
    [entry] = log.events(EVENT_PENDING_ACTIVATED)
    assert entry.argument == PENDING_BT54
    assert entry.user_id == 0xFFFF  # the meter itself
    # stamped at reception + 2 h exactly: the LTIME_DATE reads bracket the reception
    two_hours = dt.timedelta(hours=2)
    assert before + two_hours <= entry.time <= after + two_hours + dt.timedelta(seconds=1)


def test_activation_instant_crossed_while_the_emulator_was_down(start_emulator, tmp_path):
    state = tmp_path / "state"
    start = dt.datetime(2026, 3, 1, 8, 0, 0)
    emu = start_emulator("--start-time", start.isoformat() + "Z", state=state)
    at = dt.datetime(2026, 3, 1, 9, 30)
    ped = bytes([0, at.year - 2000, at.month, at.day, at.hour, at.minute])
    with e2e.c1218_session(emu.client_url, e2e.MK) as conn:
        calendar = _calendar_with_id(conn, 77)
        conn.set_table_data(PENDING_BT54, ped + calendar)
        assert conn.get_table_data(PENDING_BT54) == ped + calendar
    emu.kill9()

    again = start_emulator("--start-time", "2026-03-02T00:00:00Z", state=state)
    assert e2e.read_table_lib(again.client_url, 54) == calendar
    log = e2e.parse_bt74(e2e.read_table_lib(again.client_url, 74))
    [entry] = log.events(EVENT_PENDING_ACTIVATED)
    assert entry.time == at and entry.argument == PENDING_BT54
