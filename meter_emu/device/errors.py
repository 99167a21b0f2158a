"""Response codes of the table services and the exception that carries one.

The codes are the first byte of every PSEM/MEP/OSGP response (MEP guide p.10-11, C12.18). The
device model raises ``ServiceError`` with the code a real meter answers; each port encodes it.
"""

from __future__ import annotations

import enum


class ResponseCode(enum.IntEnum):
    OK = 0x00
    ERR = 0x01  # error / unrecognized (malformed) request
    SNS = 0x02  # service not supported
    ISC = 0x03  # insufficient security clearance
    ONP = 0x04  # operation not possible (e.g. repeated procedure sequence number)
    IAR = 0x05  # inappropriate action requested (e.g. the table does not exist)
    BSY = 0x06  # device busy
    DNR = 0x07  # data not ready
    DLK = 0x08  # data locked
    RNO = 0x09  # renegotiate: the response exceeds the negotiated packet size x count
    ISSS = 0x0A  # invalid service sequence state
    SME = 0x0B  # OSGP/MEP: digest (authentication) failure
    UAT = 0x0C  # OSGP/MEP: invalid sequence number
    INC = 0x1E  # OSGP PLC: incompatible (the request exceeds the PLC limits; plc/server.py)
    IFC = 0x1F  # OSGP PLC: interface change (IDT version moved; plc/server.py)


class ServiceError(Exception):
    """A request the meter refuses: ``code`` goes on the wire, ``reason`` into the log."""

    def __init__(self, code: ResponseCode, reason: str):
        super().__init__(f"{code.name} (0x{code:02X}): {reason}")
        self.code = ResponseCode(code)
        self.reason = reason
