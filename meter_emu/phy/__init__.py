"""Physical layers for the power-line ports: the software BPSK PHY (ETSI TS 103 908, CENELEC
A-band) and the U50/MIP serial PLC interface. They carry ISO/IEC 14908.1 LPDUs and arrive with the
14908.1 stack; the optical port (meter_emu.ports.optical) needs no PHY of its own."""
