"""The head-end client (client/plc.py) reading real MeterStations over the simulated BPSK power
line (phy/line.py + phy/modem.py): every frame is modulated, carried through attenuation, noise
and the other stations' frames, demodulated, and reaches its node through the CSMA MAC. The
head-end attaches with ``HeadEnd.on_channel(line)`` exactly as on the in-memory Channel."""

from __future__ import annotations

import random

import pytest

from meter_emu.client.plc import HeadEnd, NoAnswer, PlcClient, head_end_config, meter_ref
from meter_emu.clock import ManualClock
from meter_emu.device.meter import Meter
from meter_emu.phy.line import Noise, PowerLine
from meter_emu.plc.station import MeterStation
from meter_emu.profile import fleet_profiles, load_profile

ET03 = 2048 + 3
OMA_KEY = b"OMA-emu-dflt"  # profiles/default.toml keys.oma


class Rig:
    """``count`` meters and a head-end on one power line (tx 122 dBuV, 40 dB links, noise
    floor 0 dBuV/Hz: 46 dB SNR unless a test changes a link or the noise)."""

    def __init__(self, count=3, overrides=(), *, noise=None, seed=1, timeout=30.0):
        self.clock = ManualClock()
        self.line = PowerLine(noise=noise, seed=seed)
        self.stations = []
        self.links = []
        for index, profile in enumerate(fleet_profiles(load_profile("default", list(overrides)),
                                                       count)):
            station = MeterStation(Meter(profile, now=self.clock.now()), self.clock,
                                   rng=random.Random(index))
            self.links.append(self.line.attach_station(station))
            self.stations.append(station)
        self.head_end = HeadEnd.on_channel(self.line, head_end_config(),
                                           rng=random.Random(99), timeout=timeout)
        self.client = PlcClient(self.head_end, OMA_KEY, rng=random.Random(5))

    def table(self, index, number):
        return self.stations[index].meter.table_bytes(number, self.clock.now())


def test_a_head_end_reads_tables_from_meters_over_the_bpsk_line():
    rig = Rig(3)
    heard = []
    rig.line.taps.append(lambda raw, sender, start, end: heard.append(end - start))
    for index, station in enumerate(rig.stations):
        ref = meter_ref(station.meter.profile.identity.neuron_id)
        assert rig.client.read_table(ref, 1) == rig.table(index, 1)
        assert rig.client.read_table(ref, ET03) == rig.table(index, ET03)  # 143 B: 2 parts
    head = rig.line.stats[rig.head_end.link]
    assert head.received == head.sent == 9  # 3 meters x 3 requests, each answered once
    assert all(rig.line.stats[link].received == 3 for link in rig.links)
    # the answers took PLC airtime: the line's clock ran on
    assert rig.line.now >= sum(heard) > 9 * 2 * rig.line.modem.airtime(20)


def test_a_far_meter_is_read_through_a_repeater_when_the_direct_link_fails():
    rig = Rig(2, ("identity.subnet=1", "identity.node=1"), timeout=60.0)
    he, near, far = rig.head_end.link, rig.links[0], rig.links[1]
    rig.line.set_attenuation(he, far, 125.0)  # -3 dBuV: far below the 36 dBuV noise
    rig.line.set_attenuation(he, near, 60.0)
    rig.line.set_attenuation(near, far, 60.0)
    rig.client.timeout = 10.0
    with pytest.raises(NoAnswer):
        rig.client.read_table(meter_ref("1/2"), 1)
    assert rig.line.stats[far].received == 0 and rig.line.stats[far].missed > 0
    rig.client.timeout = 60.0
    target = meter_ref("1/2").via("1/1")
    assert rig.client.read_table(target, 1) == rig.table(1, 1)
    assert rig.client.read_table(target, ET03) == rig.table(1, ET03)
    assert rig.line.stats[far].received > 0


def test_a_jammed_primary_carrier_is_escaped_on_the_secondary_by_the_last_retries():
    """A tone 10 dB above every frame on 86 kHz: the first tries are lost, the last retries
    (alternate-path bit) go on 75 kHz, and the meter answers on the carrier it was asked on."""
    rig = Rig(1, noise=Noise(interferers=[(86_000.0, 92.0)]))
    answers = []
    rig.line.taps.append(lambda raw, sender, start, end: answers.append((sender, raw[0] & 0x40)))
    ref = meter_ref(rig.stations[0].meter.profile.identity.neuron_id)
    assert rig.client.read_table(ref, 1) == rig.table(0, 1)
    meter = rig.links[0]
    assert answers and all(alt for sender, alt in answers if sender == meter)
    assert any(not alt for sender, alt in answers if sender == rig.head_end.link)
    assert rig.line.stats[meter].crc_errors + rig.line.stats[meter].missed >= 1
