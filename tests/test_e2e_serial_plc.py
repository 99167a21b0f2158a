"""Issue 10 "done when", end to end over real ptys and real ``meter-emu`` subprocesses.

1. ``meter-emu run --count 5 --serial-plc pty --cnip off`` (NI role) and ``meter-emu client read
   1 --serial <pty>``: a head-end that only speaks the U50 link reads BT01 from two meters.
2. Host role against NI role over a pty: emulator A is the NI (``--serial-plc pty``, 3 meters,
   CN/IP on); emulator B (one meter with its own Neuron ID) drives A's NI with ``--serial-plc
   host:<A's pty>``. A CN/IP client on B reads A's meter, a CN/IP client on A reads B's meter:
   requests and answers cross the pty in both directions and both roles transmit and receive.
3. ``meter-emu pty`` joins an NI opened on a device path (one end) and a client (other end).
"""

from __future__ import annotations

import subprocess

from e2e import _script, run_client, start_emulator  # noqa: F401 - the fixture

from meter_emu.profile import fleet_profiles, load_profile

CLIENT_TIMEOUT = 60.0
B_NEURON_ID = "0B0000000001"


def client(*args: str) -> subprocess.CompletedProcess:
    return run_client(*args, timeout=CLIENT_TIMEOUT)


def serial_number(index: int) -> str:
    return fleet_profiles(load_profile(), index + 1)[index].identity.serial_number


def assert_bt01(result: subprocess.CompletedProcess, neuron_id: str, serial: str) -> None:
    assert result.returncode == 0, result.stderr
    assert f"from meter {neuron_id}" in result.stdout
    assert f"serial_number = {serial}" in result.stdout


def test_client_over_serial_reads_tables_from_the_fleet(start_emulator):  # noqa: F811 - the fixture
    emu = start_emulator("--count", "5", "--serial-plc", "pty", optical="off", mep="off")
    path = emu.ready["ports"]["serial_plc"]
    assert path.startswith("/dev/")
    nids = emu.ready["neuron_ids"]
    for index in (1, 4):
        meter = emu.ready["meters"][index]
        result = client("read", "1", "--serial", path, "--meter", nids[meter])
        assert_bt01(result, nids[meter], serial_number(index))
    # the ready file alone leads the client to the serial port
    result = client("read", "BT01", "--ready-file", str(emu.ready_file), "--meter",
                    emu.ready["meters"][2])
    assert_bt01(result, nids[emu.ready["meters"][2]], serial_number(2))
    assert "serial NI" in emu.stderr() and "layer 2" in emu.stderr()


def test_host_role_emulator_exchanges_frames_with_ni_role_over_a_pty(start_emulator):  # noqa: F811 - the fixture
    a = start_emulator("--count", "3", "--serial-plc", "pty", optical="off", mep="off",
                       cnip="udp://127.0.0.1:0")
    b = start_emulator("--set", f"identity.neuron_id={B_NEURON_ID}", "--serial-plc",
                       f"host:{a.ready['ports']['serial_plc']}", optical="off", mep="off",
                       cnip="udp://127.0.0.1:0")
    a_meter = a.ready["neuron_ids"][a.ready["meters"][2]]
    # B's CN/IP client -> B's line -> B host (12) -> pty -> A's NI -> A's meter, and back (1A)
    result = client("read", "1", "--cnip", b.ready["ports"]["cnip"], "--meter", a_meter)
    assert_bt01(result, a_meter, serial_number(2))
    # A's CN/IP client -> A's line -> A's NI (1A) -> pty -> B host -> B's meter, and back (12)
    result = client("read", "1", "--cnip", a.ready["ports"]["cnip"], "--meter", B_NEURON_ID)
    assert_bt01(result, B_NEURON_ID, serial_number(0))
    assert "ready" in b.stderr() and "FE0000005550" in b.stderr()  # the NI's Neuron ID, read


def test_meter_emu_pty_joins_an_ni_and_a_client(start_emulator):  # noqa: F811 - the fixture
    relay = subprocess.Popen([_script("meter-emu"), "pty"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        ni_end, client_end = relay.stdout.readline().split()
        emu = start_emulator("--count", "2", "--serial-plc", ni_end, optical="off", mep="off")
        assert emu.ready["ports"]["serial_plc"] == ni_end
        meter = emu.ready["neuron_ids"][emu.ready["meters"][1]]
        result = client("read", "1", "--serial", client_end, "--meter", meter)
        assert_bt01(result, meter, serial_number(1))
    finally:
        relay.terminate()
        assert relay.wait(5) == 0
