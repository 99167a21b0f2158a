"""OSGP tables: the catalog (catalog.py) and the declarations (basic.py for BT n, extended.py
for ET n); their data types are in meter_emu/datatypes.py. Importing this registers them all."""

from . import basic, extended  # noqa: F401  (registers the declarations)
from .catalog import CATALOG, PENDING_BASE, Table, WriteContext, bt, et, label

__all__ = ["CATALOG", "PENDING_BASE", "Table", "WriteContext", "bt", "et", "label"]
