"""`rkfarm keygen` and `rkfarm encrypt`: farm keys and encrypted packages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rkfarm_proto.crypto import ALGORITHMS, LEVELS


def _add_crypto(sub: Any) -> None:
    k = sub.add_parser(
        "keygen",
        help="make a farm key file (the secret shared by this host and its boards)",
        description="Write a new random farm key, mode 0600, to --out (default $RKFARM_FARM_KEY_FILE or "
        "~/.config/rkfarm/farm.key). Copy it to each board (see deploy/) for `rkfarm-agent serve --farm-key-file`.",
        epilog="examples:\n"
        "  rkfarm keygen\n"
        "  rkfarm keygen --out lab.key && scp lab.key rock5b:/etc/rkfarm-agent/farm.key",
    )
    k.add_argument("--out", type=Path, help="key file to create (never overwritten)")
    k.set_defaults(func=cmd_keygen)
    e = sub.add_parser(
        "encrypt",
        help="encrypt a model package for the farm key, or seal it to chosen boards",
        description="Authenticated encryption of the payload (AES-256-GCM or ChaCha20-Poly1305). Level 1: fastest "
        "load; 2: scrypt-hardened key and 1 MiB segments with their own keys; 3: stronger scrypt (128 MiB, "
        "boards with >= 256 MB RAM) and 64 KiB segments. Agents load the result like any other package. An "
        "existing output is never replaced unless --force.",
        epilog="examples:\n"
        "  rkfarm encrypt cls.rkfm                               # cls.crypt.rkfm, for the farm key\n"
        "  rkfarm encrypt cls.rkfm -o cls.l2.rkfm --level 2 --algorithm ChaCha20-Poly1305\n"
        "  rkfarm encrypt cls.rkfm --for rk3588-board-1 --for 192.168.1.41:50551 --force",
    )
    e.add_argument("model", type=Path, help="model package (.rkfm)")
    e.add_argument("-o", "--output", type=Path, help="encrypted package to write (default: MODEL.crypt.rkfm)")
    e.add_argument("--level", type=int, choices=sorted(LEVELS), default=1, help="crypt level (default 1)")
    e.add_argument("--for", dest="recipients", action="append", metavar="AGENT",
                   help="seal to this agent only (id or host:port; repeatable) instead of the farm key")  # fmt: skip
    e.add_argument("--key-file", type=Path, help="farm key file (default $RKFARM_FARM_KEY_FILE)")
    e.add_argument(
        "--algorithm", choices=ALGORITHMS, default=ALGORITHMS[0], help=f"AEAD cipher (default {ALGORITHMS[0]})"
    )
    e.add_argument("--force", action="store_true", help="replace an existing output file")
    e.set_defaults(func=cmd_encrypt)


def cmd_keygen(args: argparse.Namespace) -> int:
    from rkfarm.keys import make_farm_key
    from rkfarm_proto.crypto import key_id, read_farm_key

    path = make_farm_key(args.out)
    print(f"wrote farm key {key_id(read_farm_key(path))} to {path} (mode 0600)")
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    from rkfarm.api import RKNN
    from rkfarm.errors import RkfarmError

    output = args.output or args.model.with_name(args.model.stem + ".crypt.rkfm")
    if output.exists() and not args.force:
        raise RkfarmError(f"{output} exists: not replaced (give --force to replace it, or -o another file)")
    if output.exists() and output.resolve() == args.model.resolve():
        raise RkfarmError(f"{output}: the output would replace the input package; give -o another file")
    rknn = RKNN(raise_errors=True)
    rknn.export_encrypted_rknn_model(
        args.model, output, args.level, recipients=args.recipients, key_file=args.key_file, algorithm=args.algorithm
    )
    print(f"wrote {output}")
    return 0


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_crypto(sub)
