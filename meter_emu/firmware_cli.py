"""``meter-emu firmware ...``: make code bank images and put them into a meter.

* ``build``: an image in the designed format (device/firmware.py) from a payload file or a
  generated body of a given size, with the AES image MAC when given a key;
* ``inspect``: an image's header, its length and CRC-32 check and, with a key, its MAC check;
* ``download``: EP08/EP09 over the optical port (client/firmware.py), resuming from ET17, with
  ``--switch`` EP10 afterwards; ``switch``: EP10 alone (also to go back to the previous bank).

Exit codes: 0 done; 1 the image is bad or the meter refused (its result code is printed);
2 a usage error (arguments, files); 3 the link failed (no meter, no answer).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_LINK = 0, 1, 2, 3
DEFAULT_KEY = "MK-meter-emu-default"  # the default profile's optical MK (profiles/default.toml)
_KEY_FORMS = "16 ASCII characters or hex: and 32 hex digits"


def add_parser(sub) -> None:
    """Register the ``firmware`` sub-command on the top-level sub-parsers."""
    firmware = sub.add_parser(
        "firmware", help="build, inspect and download code bank images",
        description="Firmware images for the meter's two code banks: build and inspect them, "
                    "download one through the optical port and switch to it.",
        epilog="Exit codes: 0 done, 1 bad image or refused by the meter, 2 usage error, "
               "3 link failure.")
    actions = firmware.add_subparsers(dest="firmware_command", required=True)

    build = actions.add_parser("build", help="make an image file",
                               description="Write an image: 34-byte header (program ID, "
                                           "version, length, CRC-32, MAC) and the body.")
    build.add_argument("--program-id", required=True, metavar="HEX16",
                       help="8 bytes in hex, reported in ET04 once the image runs")
    build.add_argument("--version", required=True, metavar="x.yy.zz",
                       help="the firmware version BT01 reports once the image runs")
    body = build.add_mutually_exclusive_group(required=True)
    body.add_argument("--payload", metavar="FILE", help="the body: this file's bytes")
    body.add_argument("--size", type=int, metavar="N",
                      help="an image of N bytes (header included) with a generated body")
    build.add_argument("--mac-key", metavar="KEY",
                       help=f"the meter's OMA key for AES mode ({_KEY_FORMS}); MAC zero without")
    build.add_argument("-o", "--output", required=True, metavar="FILE")

    inspect = actions.add_parser("inspect", help="show and check an image file")
    inspect.add_argument("image")
    inspect.add_argument("--mac-key", metavar="KEY", help=f"check the MAC ({_KEY_FORMS})")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")

    for name, text in (("download", "download an image into the inactive code bank"),
                       ("switch", "switch code banks (EP10): run the other bank's image")):
        action = actions.add_parser(name, help=text)
        action.add_argument("url", help="the optical port: tcp://HOST:PORT, socket://HOST:PORT "
                                        "or a device path (pty, /dev/ttyUSB0)")
        if name == "download":
            action.add_argument("image")
            action.add_argument("--switch", action="store_true",
                                help="switch to the image once it is complete (EP10)")
            action.add_argument("--erase", action="store_true",
                                help="start over (EP08) instead of resuming from ET17")
        action.add_argument("--key", default=DEFAULT_KEY,
                            help="optical password: up to 20 ASCII characters or hex:... "
                                 "(default: the default profile's MK)")
        action.add_argument("--user-id", type=int, default=0, help="logon user ID (BT74)")
        action.add_argument("--timeout", type=float, default=2.0, metavar="S",
                            help="response time-out per try (C12.18: 2 s, 3 tries)")


def main(args) -> int:
    command = {"build": _build, "inspect": _inspect, "download": _download,
               "switch": _switch}[args.firmware_command]
    try:
        return command(args)
    except _Usage as error:
        print(f"meter-emu firmware: {error}", file=sys.stderr)
        return EXIT_USAGE


class _Usage(Exception):
    """A command line the user must fix: exit code 2 with the message."""


def _mac_key(text: str | None) -> bytes | None:
    """An AES-128 OMA key: as the profiles write keys, but 16 bytes."""
    from .profile import key_text_bytes
    from .security.aes import KEY_SIZE

    if text is None:
        return None
    try:
        key = key_text_bytes(text)
    except ValueError:
        raise _Usage(f"--mac-key {text!r}: {_KEY_FORMS}") from None
    if len(key) != KEY_SIZE:
        raise _Usage(f"--mac-key has {len(key)} bytes; an AES-128 key has {KEY_SIZE} "
                     f"({_KEY_FORMS})")
    return key


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise _Usage(f"cannot read {path}: {exc.strerror}") from None


def _build(args) -> int:
    from .device.firmware import HEADER_SIZE, build_image

    try:
        program_id = bytes.fromhex(args.program_id)
    except ValueError:
        raise _Usage(f"--program-id {args.program_id!r} is not hex") from None
    if args.payload is not None:
        body = _read(args.payload)
    elif args.size < HEADER_SIZE:
        raise _Usage(f"--size {args.size}: an image has at least its {HEADER_SIZE}-byte header")
    else:  # reproducible, and different for each version
        body = hashlib.shake_256(f"meter-emu image {args.version}".encode()).digest(
            args.size - HEADER_SIZE)
    try:
        image = build_image(program_id, args.version, body, _mac_key(args.mac_key))
    except ValueError as error:
        raise _Usage(str(error)) from None
    try:
        Path(args.output).write_bytes(image)
    except OSError as exc:
        raise _Usage(f"cannot write {args.output}: {exc.strerror}") from None
    mac = "with its AES image MAC" if args.mac_key else "MAC zero (RC4 mode)"
    print(f"{args.output}: firmware {args.version}, program ID {program_id.hex().upper()}, "
          f"{len(image)} bytes ({-(-len(image) // 64)} packets), {mac}")
    return EXIT_OK


def _inspect(args) -> int:
    from .device.firmware import PACKET_SIZE, DownloadRefused, inspect_image

    data = _read(args.image)
    try:
        image, problems = inspect_image(data, _mac_key(args.mac_key))
    except DownloadRefused as refused:
        print(f"{args.image}: not a firmware image: {refused.reason}", file=sys.stderr)
        return EXIT_REFUSED
    report = {"program_id": image.program_id.hex().upper(), "firmware_version": image.version,
              "length": image.length, "packets": -(-image.length // PACKET_SIZE),
              "crc32": f"{image.crc32:08X}", "mac": image.mac.hex().upper(),
              "mac_checked": args.mac_key is not None, "problems": problems}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, value in report.items():
            if name != "problems":
                print(f"{name:<17} {value}")
        print("ok" if not problems else "\n".join(f"BAD: {p}" for p in problems))
    return EXIT_OK if not problems else EXIT_REFUSED


def _session(args):
    """Connect and log on; the caller runs in the ``with`` block."""
    from .client.optical import connect, parse_password

    try:
        password = parse_password(args.key)
    except ValueError as error:
        raise _Usage(f"--key: {error}") from None
    try:
        client = connect(args.url, response_timeout=args.timeout)
    except ValueError as error:
        raise _Usage(str(error)) from None
    return client, client.session(password, user_id=args.user_id, user="firmware")


def _talk(args, action) -> int:
    """Run ``action(client)`` in a session; map failures to exit codes and messages."""
    from .client.optical import ClientError, LinkError, PsemError

    try:
        client, session = _session(args)
    except LinkError as error:
        print(f"meter-emu firmware: {error}", file=sys.stderr)
        return EXIT_LINK
    try:
        with session:
            return action(client)
    except LinkError as error:
        print(f"meter-emu firmware: link failure: {error}", file=sys.stderr)
        return EXIT_LINK
    except PsemError as error:
        hint = " (wrong --key?)" if error.service == "security" else ""
        print(f"meter-emu firmware: {error}{hint}", file=sys.stderr)
        return EXIT_REFUSED
    except ClientError as error:
        print(f"meter-emu firmware: {error}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        client.close()


def _download(args) -> int:
    from .client import firmware as fw

    image = _read(args.image)
    try:
        info = fw.image_info(image)
    except fw.DownloadError as error:
        raise _Usage(f"{args.image}: {error}") from None

    def action(client) -> int:
        print(f"downloading {args.image}: firmware {info.version}, {info.length} bytes, "
              f"{fw.packet_count(info.length)} packets", flush=True)
        fw.download(client, image, erase=args.erase,
                    progress=lambda text: print(text, flush=True))
        if args.switch:
            _switched(client, fw.switch(client))
        return EXIT_OK

    return _talk(args, action)


def _switch(args) -> int:
    from .client import firmware as fw

    return _talk(args, lambda client: _switched(client, fw.switch(client)))


def _switched(client, outcome: tuple[int, str]) -> int:
    bank, version = outcome
    print(f"switched: code bank {bank} runs, BT01 reports firmware {version}", flush=True)
    return EXIT_OK
