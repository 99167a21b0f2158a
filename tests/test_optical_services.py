"""PSEM services on the optical port, through the C12.18 link: service order, keys and their
permissions, the table-service semantics, procedures through BT07/BT08."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import bt07, MK, PK, RK, LinkClient

OK, ERR, SNS, ISC, ONP, IAR, RNO, ISSS = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x09, 0x0A
ET03, ET04 = 2051, 2052



def set_time_params(moment: dt.datetime, mask: int = 0x03, qualifier: int = 0x10) -> bytes:
    fields = [moment.year - 2000, moment.month, moment.day, moment.hour, moment.minute,
              moment.second]
    return bytes([mask]) + bytes(fields) + bytes([qualifier])


# ---- service order -------------------------------------------------------------------------


def test_services_out_of_order_answer_isss(client):
    assert client.request(b"\x30\x00\x00") == bytes([ISSS])  # read before ident
    assert client.request(b"\x50\x00\x01tester    ") == bytes([ISSS])  # logon before ident
    assert client.request(b"\x20")[0] == OK
    assert client.request(b"\x51" + MK) == bytes([ISSS])  # security before logon
    assert client.request(b"\x30\x00\x00") == bytes([ISSS])  # read before logon
    assert client.request(b"\x50\x00\x01tester    ") == b"\x00"
    assert client.request(b"\x60\x00\x40\x01") == bytes([ISSS])  # negotiate after logon
    assert client.request(b"\x52") == b"\x00"  # logoff: back to identified
    assert client.request(b"\x30\x00\x00") == bytes([ISSS])
    assert client.request(b"\x21") == b"\x00"  # terminate: back to base
    assert client.request(b"\x50\x00\x01tester    ") == bytes([ISSS])


def test_ident_restarts_a_session_left_open(client, meter, clock):
    client.logon(MK)
    assert client.read(3)[:1] == b"\x01"  # logged on with MK: BT03 readable
    assert client.request(b"\x20")[0] == OK  # a new client starts with ident
    assert client.request(b"\x50\x00\x01tester    ") == b"\x00"
    assert client.read(3) == bytes([ISC])  # the old key is gone


def test_session_times_out_to_base_state(client, meter):
    client.logon(MK)
    client.now += meter.profile.optical.session_timeout_s + 1
    assert client.request(b"\x30\x00\x00") == bytes([ISSS])


def test_wait_service_stretches_the_idle_time(client, meter):
    client.logon(MK)
    assert client.request(b"\x70\x3C") == b"\x00"  # wait 60 s
    client.now += meter.profile.optical.session_timeout_s + 30
    assert client.read(0)[:1] == b"\x02"


def test_unknown_service_and_malformed_requests(client):
    client.logon(MK)
    assert client.request(b"\x99") == bytes([SNS])
    assert client.request(b"\x30\x00") == bytes([ERR])  # too short
    assert client.request(b"\x3F\x00\x00\x00") == bytes([ERR])
    assert client.request(b"") == bytes([ERR])
    assert client.request(b"\x51" + b"x" * 5) == bytes([ERR])


# ---- keys and access --------------------------------------------------------------------


def test_open_tables_need_no_password_others_do(client, meter, clock):
    client.logon(password=None)
    assert client.read(0) == meter.table_bytes(0, clock.now())
    assert client.read(1) == meter.table_bytes(1, clock.now())
    assert client.read(ET03) == meter.table_bytes(ET03, clock.now())
    assert client.read(3) == bytes([ISC])
    assert client.read(23) == bytes([ISC])


def test_wrong_password_sets_alarm_and_logs_event_72(client, meter, clock):
    client.logon(password=None, user_id=7)
    assert client.request(b"\x51" + b"not the key".ljust(20, b"\0")) == bytes([ISC])
    assert client.read(3) == bytes([ISC])  # still no access
    assert client.request(b"\x51" + MK) == b"\x00"
    bt03 = client.read(3)
    assert bt03[5] & 0x01  # BT03.5.0 Invalid Password (OPG p.46)
    bt74 = client.read(74)
    assert int.from_bytes(bt74[1:3], "little") == 1  # one valid entry
    entry = bt74[11:25]
    assert int.from_bytes(entry[8:10], "little") == 7  # user id of the logon
    assert int.from_bytes(entry[10:12], "little") & 0x0FFF == 72


@pytest.mark.parametrize("password, key", [(MK, "MK"), (PK, "PK"), (RK, "RK")])
def test_each_key_reads_metering_tables(client, password, key):
    client.logon(password)
    assert len(client.read(23)) == 300
    assert client.link.session.key.value == key


def test_read_only_key_cannot_write(client, meter, clock):
    client.logon(RK)
    before = meter.table_bytes(ET03, clock.now())
    assert client.write(ET03, b"CHANGED\0", offset=0) == bytes([ISC])
    assert meter.table_bytes(ET03, clock.now()) == before


def test_read_only_tables_answer_iar_to_writes(client):
    client.logon(MK)
    assert client.write(0, b"\x00", offset=0) == bytes([IAR])


def test_provisioning_key_can_be_disabled_in_et04(client, meter, clock):
    client.logon(MK)
    assert client.write(ET04, b"\x01", offset=52) == b"\x00"  # ET04.52 PK Access = disabled
    assert client.request(b"\x21") == b"\x00"
    client.logon(password=None)
    assert client.request(b"\x51" + PK) == bytes([ISC])


# ---- table services -----------------------------------------------------------------------


def test_missing_table_answers_iar(client):
    client.logon(MK)
    assert client.read(99) == bytes([IAR])
    assert client.read(2048 + 99) == bytes([IAR])
    assert client.read(99, 0, 4) == bytes([IAR])
    assert client.write(99, b"\x00", offset=0) == bytes([IAR])


def test_partial_read_past_the_end_pads_with_zeros(client, meter, clock):
    client.logon(MK)
    bt01 = meter.table_bytes(1, clock.now())
    assert client.read(1, 20, 10) == bt01[20:] + bytes(6)
    assert client.read(1, 500, 3) == bytes(3)


def test_write_then_read_back(client, meter, clock):
    client.logon(MK)
    assert client.write(ET03, b"SN-42".ljust(30, b"\0"), offset=0) == b"\x00"
    assert client.read(ET03, 0, 30) == b"SN-42".ljust(30, b"\0")
    assert meter.dirty  # the port persists this before answering


def test_write_with_bad_checksum_or_length_is_refused(client, meter, clock):
    client.logon(MK)
    before = meter.table_bytes(ET03, clock.now())
    data = b"BAD"
    apdu = b"\x4F\x08\x03\x00\x00\x00\x00\x03" + data + bytes([(-sum(data) + 1) & 0xFF])
    assert client.request(apdu) == bytes([ERR])
    apdu = b"\x4F\x08\x03\x00\x00\x00\x00\x05" + data + bytes([(-sum(data)) & 0xFF])
    assert client.request(apdu) == bytes([ERR])
    assert meter.table_bytes(ET03, clock.now()) == before


def test_write_is_validated_by_the_layout(client, meter, clock):
    client.logon(MK)
    before = meter.table_bytes(5, clock.now())
    assert client.write(5, b"\xAB" * 10) == bytes([ERR])  # BT05 is BCD: 0xAB is no digit
    assert meter.table_bytes(5, clock.now()) == before
    assert client.write(5, bytes.fromhex("00000000000000004242")) == b"\x00"
    assert client.read(5) == bytes.fromhex("00000000000000004242")


def test_write_longer_than_the_table_is_cut(client, meter, clock):
    client.logon(MK)
    assert client.write(5, bytes.fromhex("11111111111111111111") + b"\x99" * 5) == b"\x00"
    assert meter.table_bytes(5, clock.now()) == bytes.fromhex("11111111111111111111")
    assert client.write(5, b"\x00", offset=10) == bytes([IAR])  # nothing left to write


def test_meter_controlled_et04_fields_keep_their_values(client, meter, clock):
    client.logon(MK)
    neuron = meter.table_bytes(ET04, clock.now())[4:10]
    assert client.write(ET04, b"\xFF" * 6, offset=4) == b"\x00"
    assert client.read(ET04, 4, 6) == neuron


def test_register_write_updates_bt23(client, meter, clock):
    client.logon(MK)
    assert client.write(23, (123456).to_bytes(4, "little"), offset=0) == b"\x00"
    assert meter.state.registers["fwd_active_wh"] == 123456
    bt23 = client.read(23)
    assert int.from_bytes(bt23[24:28], "little") == 123456  # Fwd+Rev (summation 6)


# ---- procedures -------------------------------------------------------------------------


def test_bp10_sets_the_clock_and_logs_time_changed(client, meter, clock):
    client.logon(MK)
    target = dt.datetime(2030, 6, 15, 12, 34, 56)
    assert client.write(7, bt07(10, 5, set_time_params(target))) == b"\x00"
    assert client.read(8)[:4] == bytes([10, 0, 5, 0])  # number, PSN, completed
    assert client.read(52)[:6] == bytes([30, 6, 15, 12, 34, 56])
    clock.advance(61)
    assert client.read(52)[:6] == bytes([30, 6, 15, 12, 35, 57])  # the clock keeps running
    local = client.read(55)[:6]  # BT55 is local time: UTC + 60 min in the default profile
    assert local == bytes([30, 6, 15, 13, 35, 57])
    assert [e[3] for e in meter.state.history.entries] == [3, 4, 9]  # old, new time; invoked


def test_bp10_local_time_qualifier_is_converted(client, meter, clock):
    client.logon(MK)
    local = dt.datetime(2030, 1, 1, 10, 0, 0)
    params = set_time_params(local, mask=0x07, qualifier=0x20)  # TZ applied, not GMT
    assert client.write(7, bt07(10, 6, params)) == b"\x00"
    assert client.read(52)[:6] == bytes([30, 1, 1, 9, 0, 0])


def test_repeated_procedure_sequence_number_is_refused(client, meter):
    client.logon(MK)
    params = set_time_params(dt.datetime(2030, 1, 1))
    assert client.write(7, bt07(10, 9, params)) == b"\x00"
    assert client.write(7, bt07(10, 9, params)) == bytes([ONP])
    assert [e[3] for e in meter.state.history.entries] == [3, 4, 9]  # time changed, invoked (once)
    assert client.write(7, bt07(10, 10, params)) == b"\x00"


def test_psn_255_refused_right_after_logon(client):
    client.logon(MK)
    assert client.write(7, bt07(10, 255, set_time_params(dt.datetime(2030, 1, 1)))) == bytes([ONP])


def test_procedure_results(client, meter):
    client.logon(MK)
    assert client.write(7, bt07(99, 1)) == b"\x00"
    assert client.read(8)[:4] == bytes([99, 0, 1, 6])  # unrecognized
    assert client.write(7, bt07(10, 2, b"\x03\x1e")) == b"\x00"
    assert client.read(8)[:4] == bytes([10, 0, 2, 2])  # invalid parameter (too short)
    assert client.write(7, bt07(10, 3, bytes(8))) == b"\x00"
    assert client.read(8)[:4] == bytes([10, 0, 3, 2])  # neither date nor time selected
    assert len(meter.state.history.entries) == 0


def test_read_only_key_may_set_the_clock_unless_et04_forbids_it(client, meter):
    client.logon(RK)
    params = set_time_params(dt.datetime(2031, 1, 1))
    assert client.write(7, bt07(10, 1, params)) == b"\x00"
    assert client.read(8)[:4] == bytes([10, 0, 1, 0])
    # the MK sets ET04.71.0 (RK BP10 + EP16 access disabled)
    client.request(b"\x21")
    client.logon(MK)
    assert client.write(2052, b"\x01", offset=71) == b"\x00"
    client.request(b"\x21")
    client.logon(RK)
    assert client.write(7, bt07(10, 2, params)) == b"\x00"
    assert client.read(8)[:4] == bytes([10, 0, 2, 5])  # no authorization


def test_selector_do_not_post_leaves_bt08(client):
    client.logon(MK)
    params = set_time_params(dt.datetime(2030, 1, 1))
    assert client.write(7, bt07(10, 1, params)) == b"\x00"
    before = client.read(8)
    assert client.write(7, bt07(10, 2, params, selector=2)) == b"\x00"
    assert client.read(8) == before


def test_fresh_link_client_fixture_is_independent(meter, clock):
    # two connections to one meter each have their own session (one per TCP connection)
    from meter_emu.ports.optical import optical_protocol

    a, b = LinkClient(optical_protocol(meter, clock)), LinkClient(optical_protocol(meter, clock))
    a.logon(MK)
    b.logon(password=None)
    assert len(a.read(3)) == 10 and b.read(3) == bytes([ISC])


def test_bp10_with_an_impossible_year_is_refused(client, meter, clock):
    client.logon(MK)
    params = b"\x03" + bytes([200, 1, 1, 0, 0, 0]) + b"\x00"  # year byte 200: no OSGP year
    assert client.write(7, bt07(10, 1, params)) == b"\x00"
    assert client.read(8)[:4] == bytes([10, 0, 1, 2])  # invalid parameter
    assert client.read(52)[0] == 26  # the clock still reads 2026
