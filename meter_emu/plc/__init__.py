"""OSGP over the power line (DESIGN.md D1-D5): a meter's station on a 14908.1 node
(station.py), the secured OSGP APDU with sequence numbers, OMA digest, RC4 or AES for both ends
(secure.py), the meter's OSGP server with secure broadcast (server.py), and the network services
FCM / ADD / ATM (services.py). Sans-I/O."""

#: OSGP table services (DESIGN.md D1: the command code is the APDU destination/type byte)
FULL_READ, PARTIAL_READ, FULL_WRITE, PARTIAL_WRITE = 0x30, 0x3F, 0x40, 0x4F
OSGP_COMMANDS = frozenset({FULL_READ, PARTIAL_READ, FULL_WRITE, PARTIAL_WRITE})

#: designed: the OSGP network services (D5) as foreign-frame APDU codes next to the writes.
FCM, ADD, ATM = 0x41, 0x42, 0x43
#: LTEP proxy (reference/lower-layers.md section 8.3): request / success response, failure
LTEP_SUCCESS, LTEP_FAILURE = 0x4D, 0x4C

#: PLC limits (slides; DESIGN.md D1): 84 data bytes per partial read, 75 per partial write,
#: so that neither APDU exceeds 95 bytes
MAX_READ, MAX_WRITE, MAX_APDU = 84, 75, 95
