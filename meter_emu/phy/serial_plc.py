"""CONTRACT (the U50 helper implements and rewrites this docstring).

``--serial-plc``: the U50/MIP serial link (phy/u50.py) as a gateway of the fleet's line.
* ``pty`` or a device path: NI role. The fleet appears as a PLC network interface; host software
  resets it, reads its status and Neuron ID, switches it to layer 2 and sends LPDUs (NI command
  12/13) that go onto the line; every frame on the line comes back as layer-2 receive (1A, or
  1B/1C with phase and SSI bytes in PL modes).
* ``host:DEVICE``: host role. The emulator drives a real NI on DEVICE: reset, layer 2, status,
  then frames the meters send leave as 12 and frames the NI receives (1A) go onto the line.
"""

from __future__ import annotations


async def open_serial_plc(url: str, line):
    """The gateway (with ``url``: the path a host opens, ``close()``); PortUrlError on a bad
    URL."""
    raise NotImplementedError
