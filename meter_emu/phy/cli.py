"""CONTRACT (the modem helper implements): ``meter-emu phy ber`` and ``meter-emu phy spectrum``."""

from __future__ import annotations


def add_parser(sub) -> None:
    phy = sub.add_parser("phy", help="the software BPSK PHY's pictures (BER, spectrum)")
    phy.add_subparsers(dest="phy_command", required=True)


def main(args) -> int:
    raise NotImplementedError
