"""The event logs and their procedures through the optical port: BT74/ET79 contents, BT73's
selection, BP04/BP05 list pointers, EP03 Clear Alarms, EP38/EP40 clearing, session events."""

from __future__ import annotations

import datetime as dt

from conftest import Procedures, MK, RK, LinkClient

from meter_emu.clock import ManualClock
from meter_emu.device.meter import Meter
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile

BT03, BT73, BT74, ET03, ET79 = 3, 73, 74, 2051, 2048 + 79
EP03, EP38, EP40 = 2048 + 3, 2048 + 38, 2048 + 40
HISTORY, EVENT_LOG = 8, 1  # C12.19 LIST numbers



def entries(raw: bytes) -> list[tuple[int, int, int, int]]:
    """(element, sequence, event, argument) of the used elements of a BT74/ET79 image."""
    found = []
    for element, start in enumerate(range(11, len(raw), 14)):
        e = raw[start:start + 14]
        if any(e):
            found.append((element, int.from_bytes(e[6:8], "little"),
                          int.from_bytes(e[10:12], "little") & 0xFFF,
                          int.from_bytes(e[12:14], "little")))
    return found


def header(raw: bytes) -> dict:
    le = lambda a, b: int.from_bytes(raw[a:b], "little")  # noqa: E731
    return dict(overflow=bool(raw[0] & 2), valid=le(1, 3), last_element=le(3, 5),
                last_sequence=le(5, 9), unread=le(9, 11))


def events_in(raw: bytes) -> list[int]:
    return [event for _, _, event, _ in sorted(entries(raw), key=lambda e: e[1])]


def set_time(run, year: int) -> None:
    params = bytes([0x03, year - 2000, 1, 1, 0, 0, 0, 0])
    assert run(10, params)[0] == 0


def test_bp10_logs_both_time_changed_entries_and_procedure_invoked(client):
    client.logon(MK, user_id=7)
    run = Procedures(client)
    set_time(run, 2031)
    log = client.read(BT74)
    assert [(e, a) for _, _, e, a in entries(log)] == [(3, 0), (4, 0), (9, 10)]
    first = log[11:11 + 14]
    assert first[:6] == bytes([26, 1, 1, 0, 0, 0])  # the old time (the manual clock's start)
    assert int.from_bytes(first[8:10], "little") == 7  # the C12.18 user ID
    second = log[11 + 14:11 + 28]
    assert second[:6] == bytes([31, 1, 1, 0, 0, 0])  # the new time
    assert header(log) == dict(overflow=False, valid=3, last_element=2, last_sequence=3, unread=3)


def test_table_write_is_logged_with_the_table_number(client):
    client.logon(MK)
    assert client.write(ET03, b"SERIAL-1".ljust(30, b"\0")) == b"\x00"
    assert entries(client.read(BT74))[-1][2:] == (10, ET03)


def test_bp05_and_bp04_move_the_unread_count_and_the_unread_alarm(client):
    client.logon(MK)
    run = Procedures(client)
    set_time(run, 2031)
    set_time(run, 2032)  # 3, 4, 9 each; the second jump completes a load profile block: 94
    assert header(client.read(BT74))["unread"] == 7
    assert client.read(BT03)[7] & 0x10  # BT03 byte 7 bit 4: Event Log Unread Entries
    assert run(5, bytes([HISTORY]) + (5).to_bytes(2, "little"))[0] == 0
    assert header(client.read(BT74))["unread"] == 2  # BP05 itself is not logged by default
    assert run(5, bytes([HISTORY]) + (9).to_bytes(2, "little"))[0] == 0
    assert header(client.read(BT74))["unread"] == 0  # never below zero
    assert not client.read(BT03)[7] & 0x10
    set_time(run, 2033)
    assert run(4, bytes([HISTORY]))[0] == 0
    log = client.read(BT74)
    assert header(log)["unread"] == 0 and header(log)["valid"] == 10  # entries stay


def test_list_procedures_refuse_unknown_lists_and_the_read_only_key(client):
    client.logon(MK)
    run = Procedures(client)
    assert run(4, bytes([42]))[0] == 2
    assert run(5, bytes([HISTORY]))[0] == 2  # entries_read missing
    client.request(b"\x21")
    client.logon(RK)
    assert Procedures(client)(4, bytes([HISTORY]))[0] == 5


def test_circular_log_wraps_overflows_and_keeps_its_sequence():
    meter = Meter(load_profile(overrides=["dimensions.history_entries=7"]))
    client = LinkClient(optical_protocol(meter, ManualClock()))
    client.logon(MK)
    run = Procedures(client)
    for year in range(2031, 2034):  # 3 x 3 entries and one 94 (a load profile block): 10 into 7
        set_time(run, year)
    log = client.read(BT74)
    assert len(log) == 11 + 7 * 14
    assert header(log) == dict(overflow=True, valid=7, last_element=2, last_sequence=10,
                               unread=7)
    placed = {element: seq for element, seq, _, _ in entries(log)}
    assert placed == {3: 4, 4: 5, 5: 6, 6: 7, 0: 8, 1: 9, 2: 10}  # the oldest three overwritten
    assert run(5, bytes([HISTORY, 1, 0]))[0] == 0
    assert header(client.read(BT74))["overflow"] is False  # BP05 clears overflow (MEP p.241)


def test_bt73_decides_what_is_logged(client):
    client.logon(MK)
    run = Procedures(client)
    bt73 = bytearray(client.read(BT73))
    bt73[0] &= ~0x08  # stop Time Changed (old time), event 3
    bt73[0] |= 0x80  # start End Device Accessed for Read, event 7
    assert client.write(BT73, bytes(bt73)) == b"\x00"
    set_time(run, 2031)
    client.read(ET03)
    client.read(ET03)
    assert events_in(client.read(BT74)) == [10, 4, 9, 7]  # BT73 written, no 3, one 7


def test_ep38_clears_the_history_log_and_the_sequence_goes_on(client):
    client.logon(MK)
    run = Procedures(client)
    set_time(run, 2031)
    assert run(EP38)[0] == 0
    log = client.read(BT74)
    assert [(s, e, a) for _, s, e, a in entries(log)] == [(4, 16, 0), (5, 9, EP38)]
    assert header(log)["last_sequence"] == 5


def test_alternate_log_gets_its_own_events_and_shares_the_sequence(client):
    client.logon(MK)
    run = Procedures(client)
    set_time(run, 2031)
    assert run(EP40)[0] == 0
    alternate, history = client.read(ET79), client.read(BT74)
    assert [(s, e) for _, s, e, _ in entries(alternate)] == [(4, 18)]  # Event Log Cleared
    assert 18 not in events_in(history) and entries(history)[-1][1:3] == (5, 9)
    assert header(alternate)["unread"] == 1
    assert run(5, bytes([EVENT_LOG, 1, 0]))[0] == 0
    assert header(client.read(ET79))["unread"] == 0
    assert header(client.read(BT74))["unread"] == 4  # the primary log is untouched


def test_ep03_clears_the_alarms_a_mask_selects(client, meter):
    client.logon(MK)
    client.request(b"\x51" + b"wrong".ljust(20, b"\0"))  # Invalid Password: BT03 byte 5 bit 0
    assert client.request(b"\x51" + MK) == b"\x00"
    meter.raise_alarm("cover_removed")  # BT03 byte 2 bit 4
    run = Procedures(client)
    assert client.read(BT03)[5] & 0x01 and client.read(BT03)[2] & 0x10
    mask = bytearray(9)
    mask[5 - 1] = 0x01
    assert run(EP03, bytes(mask))[0] == 0
    bt03 = client.read(BT03)
    assert not bt03[5] & 0x01 and bt03[2] & 0x10
    assert run(EP03, bytes(20))[0] == 2  # longer than BT03's alarm bytes
    assert run(EP03)[0] == 0  # no mask: every alarm
    assert not client.read(BT03)[2] & 0x10
    assert entries(client.read(BT74))[-1][2:] == (9, EP03)


def test_session_end_events(meter):
    clock = ManualClock()
    client = LinkClient(optical_protocol(meter, clock))
    client.logon(MK)
    assert client.request(b"\x52") == b"\x00"  # logoff
    client.logon(MK, user_id=3)
    client.request(b"\x20")  # a new ident abandons the session
    assert [(e[3], e[2]) for e in meter.state.history.entries] == [(12, 1), (13, 3)]


def test_history_survives_a_restart_with_its_pointers(meter, client, tmp_path):
    from meter_emu.store import StateStore

    client.logon(MK)
    run = Procedures(client)
    set_time(run, 2031)
    assert run(EP40)[0] == 0
    store = StateStore(tmp_path)
    store.save(meter)
    again = Meter(load_profile(), store.load(meter.id))
    assert again.state.history == meter.state.history
    assert again.state.alternate_log == meter.state.alternate_log
    assert again.table_bytes(BT74, 0.0) == meter.table_bytes(BT74, 0.0)
    assert dt.datetime(2031, 1, 1) <= again.utc(1_767_225_600.0)


def test_bp09_remote_reset_self_read_demand_reset_and_season(client):
    client.logon(MK)
    run = Procedures(client)
    assert run(9, bytes([0b0010111]))[0] == 0  # demand reset, self read, season 2
    assert events_in(client.read(BT74))[-4:] == [21, 20, 24, 9]
    assert entries(client.read(BT74))[-2][2:] == (24, 2)
    assert client.read(55)[8] >> 4 == 2  # BT55 status bits 12..15: the season
    assert run(9, b"\x00")[0] == 2  # nothing selected
    assert run(9, bytes([0b0101100]))[0] == 2  # season 5
    client.request(b"\x21")
    client.logon(RK)
    assert Procedures(client)(9, b"\x01")[0] == 5


def test_ep26_and_ep25_work_on_the_et36_logs(client, meter):
    client.logon(MK)
    run = Procedures(client)
    otr = (0).to_bytes(1, "little") + (1).to_bytes(2, "little") + (0).to_bytes(2, "little")
    assert run(2048 + 24, otr)[0] == 0  # a meter one-time read into ET31
    assert client.read(BT03)[6] & 0x80  # Mfg Log Entry Available
    et31 = client.read(2048 + 31)
    assert et31[5] == 1  # ET36 log header (MEP p.107): flags, valid, last, sequence(2), unread
    result, data = run(2048 + 26, (2048 + 31).to_bytes(2, "little") + (5).to_bytes(2, "little"))
    assert (result, data[:2]) == (0, b"\x01\x00")  # one unread entry taken
    assert client.read(2048 + 31)[5] == 0
    assert not client.read(BT03)[6] & 0x80  # every ET36 log is read: the alarm clears
    assert run(2048 + 26, (ET03).to_bytes(2, "little") + b"\x01\x00")[0] == 2  # not a log
    assert run(2048 + 25, b"\xff\xff")[0] == 0  # empty them all
    assert client.read(2048 + 31)[1] == 0  # no valid entry left


def test_a_saved_table_that_no_longer_fits_is_a_configuration_error(meter):
    meter.state.tables[ET03] = b"too short"  # as if saved under other dimensions
    again = Meter(load_profile(), meter.state, now=1_767_225_600.0)
    assert ET03 not in again.state.tables
    assert again.state.history.entries[-1][3:] == [37, ET03]
    assert "configuration_error" in again.state.alarms
