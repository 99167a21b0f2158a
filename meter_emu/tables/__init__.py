"""OSGP tables: the catalog (catalog.py) and the declarations, one module per subsystem; their
data types are in meter_emu/datatypes.py. Importing this package registers them all."""

from . import (  # noqa: F401  (importing registers the declarations)
    basic,
    display,
    extended,
    load_profile,
    logs,
    mep_client,
    mep_devices,
    network,
    registers,
    system,
    time_tou,
)
from .catalog import CATALOG, PENDING_BASE, Table, WriteContext, bt, et, label

__all__ = ["CATALOG", "PENDING_BASE", "Table", "WriteContext", "bt", "et", "label"]
