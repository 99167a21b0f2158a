"""Per-meter keys of a fleet (fleet/keys.py): the derivation from a fleet secret, the key file
(export, import, every bad-file message), and the broadcast key that stays the fleet's."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys

import pytest

from meter_emu.clock import ManualClock
from meter_emu.device import keys as device_keys
from meter_emu.device.meter import Meter
from meter_emu.fleet import keys
from meter_emu.lon.frame import Broadcast, SubnetNode
from meter_emu.lon.node import Indication, LinkInfo, Service
from meter_emu.plc.secure import BroadcastSession, ClientSession
from meter_emu.plc.server import PlcServer
from meter_emu.profile import ProfileError, fleet_profiles, load_profile

from conftest import bt07

SECRET = "fleet-secret-1"
FLEET_OMA = b"OMA-emu-dflt"  # the default profile's keys.oma
AES = ["identity.firmware_version=3.80.00", "security.mode=aes",
       "keys.oma=hex:" + b"AES-key-for-emu!".hex()]
ET04, EP27 = 2048 + 4, 2048 + 27


def fleet(count=5, *overrides, secret=SECRET, key_file=None):
    settings = list(overrides)
    if secret:
        settings.append(f'fleet.secret="{secret}"')
    if key_file:
        settings.append(f'fleet.key_file="{key_file}"')
    return keys.assign(fleet_profiles(load_profile("default", settings), count))


def effective(profile) -> dict:
    """The keys a meter uses: optical 20 bytes, MEP 16, the OMA key."""
    return {"mk": profile.key("mk"), "pk": profile.key("pk"), "rk": profile.key("rk"),
            "mak": profile.key("mak")[:16], "mbk": profile.key("mbk")[:16],
            "oma": profile.oma_key()}


# ---- derivation -------------------------------------------------------------------------------

def test_derivation_is_the_documented_hmac_and_differs_per_meter_and_key():
    meters = fleet(5)
    for profile in meters:
        nid = bytes.fromhex(profile.identity.neuron_id)
        for name, length in (("mk", 20), ("pk", 20), ("rk", 20), ("mak", 16), ("mbk", 16),
                             ("oma", 12)):
            expected = hmac.new(SECRET.encode(), b"meter-emu/" + name.encode() + b"/" + nid,
                                hashlib.sha256).digest()[:length]
            assert effective(profile)[name] == expected
    all_keys = [key for p in meters for key in effective(p).values()]
    assert len(set(all_keys)) == len(all_keys)  # no two meters, no two keys alike
    assert [effective(p) for p in fleet(5)] == [effective(p) for p in meters]  # deterministic
    assert effective(fleet(1)[0]) == effective(meters[0])  # the fleet's size does not matter
    hexed = fleet(2, secret="hex:" + SECRET.encode().hex())
    assert effective(hexed[1]) == effective(meters[1])
    assert effective(fleet(2, secret="another")[1]) != effective(meters[1])


def test_aes_fleets_get_16_byte_oma_keys_and_sections_stay_shared():
    profiles = fleet_profiles(load_profile("default", [*AES, f'fleet.secret="{SECRET}"']), 3)
    meters = keys.assign(profiles)
    assert [len(p.oma_key()) for p in meters] == [16, 16, 16]
    assert meters[0].oma_key() != meters[1].oma_key()
    for before, after in zip(profiles, meters):
        assert after.data["identity"] is before.data["identity"]
        assert after.data["dimensions"] is before.data["dimensions"]
        assert after.data["keys"] is not before.data["keys"]
    assert meters[0].template is meters[2].template


def test_no_secret_and_no_key_file_keep_the_profiles():
    profiles = fleet_profiles(load_profile(), 3)
    assert keys.assign(profiles) is profiles


def test_a_bad_secret_is_refused_with_its_key():
    with pytest.raises(ProfileError, match="fleet.secret is not valid hex"):
        load_profile("default", ['fleet.secret="hex:zz"'])


# ---- the key file -----------------------------------------------------------------------------

def test_export_then_import_gives_the_same_keys(tmp_path):
    path = tmp_path / "keys.csv"
    done = subprocess.run([sys.executable, "-m", "meter_emu", "keys", "export", "--count", "6",
                           "--fleet-secret", SECRET, "-o", str(path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#")
    assert lines[1] == ",".join(keys.COLUMNS)
    derived = fleet(6)
    assert lines[2].split(",")[1] == derived[0].identity.neuron_id.upper()
    imported = fleet(6, secret=None, key_file=path)
    assert [effective(p) for p in imported] == [effective(p) for p in derived]
    # stdout by default, the same text
    out = subprocess.run([sys.executable, "-m", "meter_emu", "keys", "export", "--count", "6",
                          "--fleet-secret", SECRET], capture_output=True, text=True, check=True)
    assert out.stdout == path.read_text()


def test_the_file_wins_for_the_meters_it_lists_others_keep_theirs(tmp_path):
    derived = fleet(4)
    own = "11" * 12
    path = tmp_path / "keys.csv"
    path.write_text(f"# two meters\n{','.join(keys.COLUMNS)}\n"
                    f"meter-2,,,,,,,,,,{own}\n"  # by meter id; only its OMA key
                    f",{derived[3].identity.neuron_id.lower()},0,0,x,{'22' * 20},,,,,\n")
    mixed = fleet(4, key_file=path)
    assert effective(mixed[0]) == effective(derived[0])
    assert mixed[1].oma_key() == bytes.fromhex(own)
    assert mixed[1].key("mk") == derived[1].key("mk")  # an empty cell keeps the derived key
    assert mixed[3].key("mk") == bytes.fromhex("22" * 20)
    assert mixed[3].oma_key() == derived[3].oma_key()
    plain = fleet(4, secret=None, key_file=path)
    assert plain[0].oma_key() == FLEET_OMA  # unlisted, no secret: the profile's key


ROW = "meter-1,0A0B0C0D0E0F,0,0,0000000012345678," + ",".join(
    ["aa" * 20] * 3 + ["bb" * 16] * 2 + ["cc" * 12])


@pytest.mark.parametrize("text, message", [
    ("meter,neuron_id,subnet,node,serial_number,mk,pk,rk,mak,mbk\n",
     "line 1: missing column oma"),
    (",".join(keys.COLUMNS) + ",extra\n", "line 1: unknown column extra"),
    ("# only a comment\n", "no header line"),
    (",".join(keys.COLUMNS) + "\n#\n" + ROW.replace("aa" * 20, "zz" * 20, 1) + "\n",
     "line 3, column mk: is not valid hex"),
    (",".join(keys.COLUMNS) + "\n" + ROW.replace("bb" * 16, "bb" * 20, 1) + "\n",
     "line 2, column mak: is 20 bytes; a mak key is 16"),
    (",".join(keys.COLUMNS) + "\n" + ROW.replace("cc" * 12, "cc" * 13) + "\n",
     "line 2, column oma: is 13 bytes; a oma key is 12 or 16"),
    (",".join(keys.COLUMNS) + "\n" + ROW.replace("0A0B0C0D0E0F", "0A0B") + "\n",
     "line 2, column neuron_id: '0A0B' is not 12 hex digits"),
    (",".join(keys.COLUMNS) + "\n" + ROW + "\n" + ROW + "\n",
     "line 3, column meter: meter-1 is listed twice"),
    (",".join(keys.COLUMNS) + "\n" + ROW + ",x\n", "line 2: 12 columns, the header has 11"),
    (",".join(keys.COLUMNS) + "\n" + ROW.replace("cc" * 12, "cc" * 16) + "\n",
     "line 2, column oma: is 16 bytes, but security.mode = 'rc4' needs 12"),
])
def test_each_bad_key_file_names_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ProfileError) as caught:
        load_profile("default", [f'fleet.key_file="{path}"'])
    assert f"fleet.key_file {path}" in str(caught.value)
    assert message in str(caught.value)


def test_an_unreadable_key_file_is_one_line_and_exit_2(tmp_path):
    with pytest.raises(ProfileError, match="cannot read .*nothing.csv: No such file"):
        load_profile("default", [f'fleet.key_file="{tmp_path / "nothing.csv"}"'])
    done = subprocess.run([sys.executable, "-m", "meter_emu", "run", "--key-file",
                           str(tmp_path), "--mqtt", "off", "--cnip", "off", "--optical", "off",
                           "--mep", "off"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "fleet.key_file" in done.stderr
    assert "Traceback" not in done.stderr
    bad = subprocess.run([sys.executable, "-m", "meter_emu", "keys", "export", "--count", "0"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("meter-emu keys: ")


# ---- the broadcast key ------------------------------------------------------------------------

def _indication(message, dst):
    return Indication(message, Service.REQUEST, SubnetNode(1, 126), dst, b"\x4f", 0, False,
                      False, LinkInfo())


def test_the_broadcast_key_stays_the_fleets_unless_a_client_installs_one():
    clock = ManualClock()
    profile = fleet(3)[1]
    meter = Meter(profile)
    assert device_keys.oma_key(meter, device_keys.UNICAST) == profile.oma_key() != FLEET_OMA
    assert device_keys.oma_key(meter, device_keys.BROADCAST) == FLEET_OMA
    server = PlcServer(meter, clock)
    session = ClientSession(profile.oma_key())

    def ask(apdu):
        answer = session.response(server.handle(_indication(session.request(apdu),
                                                            SubnetNode(1, 5)), clock.now()))
        if answer[:1] == b"\x0c":  # the first request learns the sequence number
            answer = session.response(server.handle(
                _indication(session.request(apdu), SubnetNode(1, 5)), clock.now()))
        return answer

    params = b"\x01" + (0x1234).to_bytes(2, "little")  # EP27: join broadcast group 0x1234
    assert ask(bytes([0x40, 0, 7, 0, 6]) + bt07(EP27, 1, params)) == b"\x00"
    window = (1000).to_bytes(4, "little") + (50).to_bytes(2, "little")
    assert ask(bytes([0x4F]) + ET04.to_bytes(2, "big") + (82).to_bytes(3, "big")
               + len(window).to_bytes(2, "big") + window) == b"\x00"

    def broadcast(key, sequence) -> bool:
        """Whether the meter accepted it (ET04.76 Broadcast Receipt moved)."""
        clock.advance(1)
        before = meter.table_bytes(ET04, 0)[76:82]
        apdu = bytes([0x3F]) + (23).to_bytes(2, "big") + (0).to_bytes(3, "big") + b"\x00\x04"
        message = BroadcastSession(key, group=0x1234, sequence=sequence).request(apdu)
        server.handle(_indication(message, Broadcast(0)), clock.now())
        return meter.table_bytes(ET04, 0)[76:82] != before

    assert not broadcast(profile.oma_key(), 1001)  # the meter's own unicast key: no
    assert broadcast(FLEET_OMA, 1002)  # the fleet profile's key: yes
    installed = b"new-bcast-12"
    device_keys.set_oma_key(meter, device_keys.BROADCAST, installed)  # as EP20 / FCM do
    assert device_keys.oma_key(meter, device_keys.BROADCAST) == installed
    assert not broadcast(FLEET_OMA, 1003)
    assert broadcast(installed, 1004)
