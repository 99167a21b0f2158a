"""meter_emu: a device emulator of an OSGP smart meter.

Layers (see ../shared/DESIGN.md): ports (the only I/O) -> protocol layers (sans-I/O) -> the device
model (meter_emu.device, catalogs in meter_emu.tables and meter_emu.procedures) -> the store.
"""

__version__ = "0.1.0"
