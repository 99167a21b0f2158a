"""The meter's PLC key state (device/keys.py): security mode (ET04.127), the OMA key in use
(profile or EP20), key usage counts (ET54.82 / ET54.86, MEP p.137) against ET04.123 with the
event at 80 % (MEP p.65). Counts go in through the meter API (as the PLC stack will call it) and
come out through the optical port."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import MK, LinkClient, Procedures, bt07

from meter_emu.device import keys
from meter_emu.device.meter import Meter, MeterState
from meter_emu.events import EVENTS, USER_PLC
from meter_emu.ports.optical import optical_protocol
from meter_emu.procedures.catalog import ep
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, et

AES_KEY = bytes(range(0x41, 0x51))  # "ABCD...P"
AES = ["identity.firmware_version=3.80.00", "security.mode=aes", "keys.oma=hex:" + AES_KEY.hex()]


def make_meter(*overrides: str) -> Meter:
    return Meter(load_profile(overrides=["identity.firmware_version=3.80.00", *overrides]))


def optical(meter: Meter, clock) -> LinkClient:
    client = LinkClient(optical_protocol(meter, clock))
    client.logon(MK)
    return client


def et54_counts(client) -> tuple[int, int]:
    raw = client.read(et(54), 82, 8)  # MEP p.137: two UINT32 at 82 and 86
    return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")


def key_events(meter) -> list[tuple[int, int]]:
    """(user ID, argument) of every event 108 in the history log."""
    return [(e[2], e[4]) for e in meter.state.history.entries if e[3] == 108]


def use(meter, clock, times: int, broadcast: bool = False) -> None:
    for _ in range(times):
        keys.count_use(meter, clock.now(), broadcast=broadcast)


# ---- security mode and ET04 -------------------------------------------------------------------

def test_et04_takes_the_profiles_security_settings(clock):
    meter = make_meter(*AES[1:], "security.max_key_usage_count=4000000000",
                       "plc.sequence_number=305419896")
    client = optical(meter, clock)
    et04 = client.read(et(4))
    assert et04[127] == keys.AES_PSK == 2 and keys.security_mode(meter) == 2
    assert int.from_bytes(et04[123:127], "little") == 4_000_000_000 == keys.max_key_usage(meter)
    assert et04[0:4] == bytes.fromhex("78563412")  # ET04.0 PLC sequence number, UINT32 LSB first
    default = Meter(load_profile())
    assert default.table_bytes(et(4), 0.0)[127] == keys.RC4 == keys.security_mode(default)
    assert default.table_bytes(et(4), 0.0)[123:127] == (1_000_000).to_bytes(4, "little")


def test_et04_offsets_the_fast_path_reads_are_the_layouts():
    layout = CATALOG[et(4)].layout_for(Meter(load_profile()))
    offsets, at = {}, 0
    for sub in layout.subcons:
        offsets[sub.name] = at
        at += sub.sizeof()
    assert offsets["maximum_key_usage_count"] == keys._ET04_MAX_USAGE == 123  # MEP p.65
    assert offsets["security_mode"] == keys._ET04_MODE == 127


def test_security_mode_and_limit_are_the_meters_own(clock):
    """ET04.127 and .123 are meter-controlled: a client's write of ET04 stores the table (so the
    fast path reads the stored image) but leaves both as they were."""
    meter = make_meter("security.max_key_usage_count=10")
    client = optical(meter, clock)
    image = bytearray(client.read(et(4)))
    image[123:127] = (99).to_bytes(4, "little")
    image[127] = 2
    image[52] = 1  # pk_access, a field a client may change
    assert client.write(et(4), bytes(image)) == b"\x00"
    assert et(4) in meter.state.tables
    info = meter.system_info()
    assert info.pk_access == 1 and info.security_mode == 0 == keys.security_mode(meter)
    assert info.maximum_key_usage_count == 10 == keys.max_key_usage(meter)


def test_the_stored_et04_decides_once_the_meter_changes_it(clock):
    meter = make_meter(*AES[1:])
    info = meter.system_info()
    info.security_mode = keys.RC4  # what the (future) AES configuration process may do
    meter.state.tables[et(4)] = CATALOG[et(4)].layout_for(meter).build(info)
    assert keys.security_mode(meter) == keys.RC4
    assert keys.oma_key(meter) is None  # no 12-byte key was ever provisioned
    info.security_mode = 1  # reserved (MEP p.66)
    meter.state.tables[et(4)] = CATALOG[et(4)].layout_for(meter).build(info)
    assert keys.oma_key(meter) is None


# ---- the key in use -------------------------------------------------------------------------

def test_oma_key_is_the_profiles_until_ep20_sets_one_of_the_modes_length(clock):
    meter = make_meter(*AES[1:])
    assert keys.oma_key(meter, 0) == keys.oma_key(meter, 1) == AES_KEY
    procedures = Procedures(optical(meter, clock))
    rc4_key, aes_key = b"twelve bytes", b"sixteen bytes!!!"
    assert procedures(ep(20), b"\x00" + rc4_key)[0] == 0
    assert keys.oma_key(meter, 0) == AES_KEY  # a 12-byte key is not used in AES mode
    assert procedures(ep(20), b"\x00" + aes_key)[0] == 0
    assert keys.oma_key(meter, 0) == aes_key and keys.oma_key(meter, 1) == AES_KEY
    assert keys.provisioned_key(meter, 0, 12) == rc4_key


def test_legacy_state_with_one_key_per_slot_still_reads():
    meter = make_meter()
    meter.subsystem("oma_keys")["0"] = bytes(range(1, 13)).hex()  # saved by the earlier EP20
    assert keys.oma_key(meter, 0) == bytes(range(1, 13))
    assert keys.provisioned_key(meter, 0, 16) is None
    with pytest.raises(ValueError):
        keys.oma_key(meter, 2)


# ---- usage counts and the 80 % event ------------------------------------------------------------

def test_counts_show_in_et54_and_the_event_comes_once_at_80_percent(clock):
    meter = make_meter("security.max_key_usage_count=10")
    client = optical(meter, clock)
    assert et54_counts(client) == (0, 0)
    use(meter, clock, 7)
    use(meter, clock, 3, broadcast=True)
    assert et54_counts(client) == (7, 3) == keys.usage(meter)
    assert key_events(meter) == []
    use(meter, clock, 1)  # 8 of 10: 80 %
    assert key_events(meter) == [(USER_PLC, 0x0100)]
    use(meter, clock, 5)  # past the maximum: still counted (MEP documents only the event)
    use(meter, clock, 5, broadcast=True)
    assert key_events(meter) == [(USER_PLC, 0x0100), (USER_PLC, 0x0101)]
    assert et54_counts(client) == (13, 8)
    assert client.read(et(54), 90, 1) == b"\x05"  # supported security modes (MEP p.137)


def test_threshold_is_exactly_80_percent_of_et04_123(clock):
    meter = make_meter("security.max_key_usage_count=1000000")
    meter.subsystem("key_usage")["unicast"] = 799_998
    use(meter, clock, 1)
    assert key_events(meter) == []
    use(meter, clock, 1)  # 800,000 = 80 % of the default one million
    assert key_events(meter) == [(USER_PLC, 0x0100)]


def test_ep20_on_the_key_in_use_starts_the_count_again(clock):
    meter = make_meter("security.max_key_usage_count=5")
    client = optical(meter, clock)
    procedures = Procedures(client)
    use(meter, clock, 4)
    use(meter, clock, 4, broadcast=True)
    assert len(key_events(meter)) == 2
    assert procedures(ep(20), b"\x00" + bytes(range(1, 17)))[0] == 0  # AES key: not in use
    assert et54_counts(client) == (4, 4)
    assert procedures(ep(20), b"\x00" + bytes(range(1, 13)))[0] == 0  # the RC4 key in use
    assert et54_counts(client) == (0, 4)
    use(meter, clock, 4)  # warned again for the new key
    use(meter, clock, 4, broadcast=True)  # the broadcast key was not changed: no second event
    assert [arg for _, arg in key_events(meter)] == [0x0100, 0x0101, 0, 0, 0x0100]


def test_counts_saturate_at_uint32(clock):
    meter = make_meter()
    meter.subsystem("key_usage")["broadcast"] = 2**32 - 2
    use(meter, clock, 3, broadcast=True)
    assert keys.usage(meter) == (0, 2**32 - 1)
    assert meter.table_bytes(et(54), clock.now())[86:90] == b"\xff" * 4


def test_firmware_without_the_fields_still_counts(clock):
    """3.10: ET54 ends at 82 (MEP p.137); the counts live on for a firmware change."""
    meter = Meter(load_profile(overrides=["security.max_key_usage_count=2"]))
    use(meter, clock, 2)
    assert len(meter.table_bytes(et(54), clock.now())) == 82
    assert keys.usage(meter) == (2, 0) and key_events(meter) == [(USER_PLC, 0x0100)]


def test_key_state_survives_a_restart(clock):
    meter = make_meter("security.max_key_usage_count=5")
    Procedures(optical(meter, clock))(ep(20), b"\x01" + bytes(range(1, 13)))
    use(meter, clock, 4, broadcast=True)
    document = json.loads(json.dumps(meter.state.to_doc()))
    again = Meter(meter.profile, MeterState.from_doc(document))
    assert keys.usage(again) == (0, 4) and keys.oma_key(again, 1) == bytes(range(1, 13))
    use(again, clock, 1, broadcast=True)  # already warned before the restart
    assert len(key_events(again)) == 2  # the EP20 event and the one warning


def test_keys_never_reach_logs_or_reprs(clock, caplog):
    secret = b"SECRET-OMA-KEY-1"
    meter = make_meter("security.max_key_usage_count=1", "keys.oma=hex:" + "ab" * 12)
    caplog.set_level(logging.DEBUG)
    client = optical(meter, clock)
    assert client.write(7, bt07(ep(20), 1, b"\x00" + secret)) == b"\x00"
    use(meter, clock, 2)
    text = caplog.text.lower()
    assert "108" in text  # the events were logged ...
    for shown in (secret.hex(), "secret", "abababab"):  # ... but no key
        assert shown not in text
        assert shown not in repr(meter.profile).lower()
    assert EVENTS[108].name == "OMA Key Changed or Usage Warning"
