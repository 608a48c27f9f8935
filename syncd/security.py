"""`python -m syncd.security keygen [--client NAME]`: the command that makes CURVE keys and client certificates.

The keys' rules and the socket options are syncd/control/curve.py's; this module is only the
command line an operator types (docs/operations.md, "Remote access with CURVE").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import zmq

from .control.curve import create_client_certificate, keygen_toml


def _keygen_client(name: str, directory: Path) -> int:
    if not name or "/" in name or name.startswith("."):
        print(f"syncd: --client: expected a plain name such as web-backend, got {name!r}", file=sys.stderr)
        return 2
    try:
        public_file, secret_file = create_client_certificate(directory, name)
    except OSError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {public_file} (public) and {secret_file} (secret, mode 0600)\n"
          f"  daemon: copy {public_file.name} into daemon.curve_clients_dir, then `systemctl reload syncd` (SIGHUP)\n"
          f"  client: syncctl --client-key {secret_file} ... (or SYNCD_CLIENT_KEY={secret_file}); "
          "keep it secret: it is this client's identity")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m syncd.security", description="syncd endpoint security tools")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="print a new CURVE keypair for [daemon], or write a client's certificate")
    keygen.add_argument("--client", metavar="NAME",
                        help="write a client certificate: NAME.key (for daemon.curve_clients_dir) and NAME.key_secret")
    keygen.add_argument("--dir", type=Path, default=Path("."), help="where --client writes its files (default: here)")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        if not zmq.has("curve"):
            print(f"syncd: this libzmq {zmq.zmq_version()} was built without CURVE support", file=sys.stderr)
            return 1
        if args.client is not None:
            return _keygen_client(args.client, args.dir)
        sys.stdout.write(keygen_toml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
