"""``spectra seal``: a Secret sealed for an inventory's cluster, offline, with kubeseal and the PKI's certificate.

    spectra seal INVENTORY --namespace NS --name NAME --from-literal KEY=VALUE [--from-file KEY=PATH]
                 [--type TYPE] [--scope strict|namespace-wide|cluster-wide] [--kubeseal PATH] > secrets/NAME.yaml
    spectra seal INVENTORY --print-cert

The certificate is the cluster's sealing certificate in its PKI directory (``pki_dir``,
``<pki_dir>/sealed-secrets/sealing.crt``, made there when missing, as the deploy would: ``spectra.pki.sealing``),
so sealing needs neither the cluster nor its credentials. The Secret goes to kubeseal on its standard input and
is never written to disk; the SealedSecret is printed on standard output, checked as the deploy checks the
files of ``sealed_secrets_files``. ``--print-cert`` prints the certificate (for ``kubeseal --cert``).

Exit codes: 0 sealed; 1 kubeseal failed; 2 invalid arguments or inventory, no kubeseal, a PKI that cannot be used.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
SCOPES = ("strict", "namespace-wide", "cluster-wide")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")  # a Secret's data key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", help="the Secret's namespace (strict scope seals for namespace and name)")
    parser.add_argument("--name", help="the Secret's name")
    parser.add_argument("--from-literal", action="append", default=[], metavar="KEY=VALUE", help="(repeatable)")
    parser.add_argument("--from-file", action="append", default=[], metavar="[KEY=]PATH",
                        help="a file's content; KEY defaults to its name (repeatable)")  # fmt: skip
    parser.add_argument("--type", default="Opaque", help="the Secret's type (%(default)s)")
    parser.add_argument("--scope", choices=SCOPES, default="strict", help="kubeseal's scope (%(default)s)")
    parser.add_argument("--kubeseal", default=os.environ.get("SPECTRA_KUBESEAL", "kubeseal"),
                        help="the kubeseal program ($SPECTRA_KUBESEAL, else kubeseal on PATH)")  # fmt: skip
    parser.add_argument("--print-cert", action="store_true", help="print the sealing certificate, seal nothing")


class SealError(ValueError):
    """Arguments that cannot make a Secret; the message says which."""


def secret_data(literals: list[str], files: list[str]) -> dict[str, str]:
    """Key -> base64 value from ``--from-literal KEY=VALUE`` and ``--from-file [KEY=]PATH``."""
    data: dict[str, str] = {}

    def add(key: str, value: bytes, given: str) -> None:
        if not _KEY.match(key):
            raise SealError(f"{given}: {key!r} is not a Secret key (letters, digits, '-', '_' and '.')")
        if key in data:
            raise SealError(f"{given}: key {key!r} is given twice")
        data[key] = base64.b64encode(value).decode()

    for item in literals:
        key, sep, value = item.partition("=")
        if not sep:
            raise SealError(f"--from-literal {item!r}: expected KEY=VALUE")
        add(key, value.encode(), "--from-literal")
    for item in files:
        key, sep, path = item.partition("=")
        if not sep:
            key, path = Path(item).name, item
        try:
            content = Path(path).expanduser().read_bytes()
        except OSError as error:
            raise SealError(f"--from-file {path}: {error.strerror or error}") from None
        add(key, content, "--from-file")
    if not data:
        raise SealError("nothing to seal: give --from-literal or --from-file")
    return data


def secret(args: argparse.Namespace) -> dict[str, Any]:
    if not isinstance(args.namespace, str) or not _DNS_LABEL.match(args.namespace):
        raise SealError(f"--namespace {args.namespace!r}: a namespace name")
    if not isinstance(args.name, str) or not _DNS_NAME.match(args.name):
        raise SealError(f"--name {args.name!r}: a Secret name")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": args.name, "namespace": args.namespace},
        "type": args.type,
        "data": secret_data(args.from_literal, args.from_file),
    }


def run(args: argparse.Namespace, inventory: Any) -> int:
    from pyinfra.api import DeployError

    from deploys.components import pki, sealed_secrets
    from spectra.pki import sealing
    from spectra.pki.x509 import PKIError

    try:
        directory, spec = pki.cluster_spec(list(inventory))
        keys = sealing.ensure(directory, spec.name)
    except (DeployError, PKIError) as error:
        print(f"spectra: seal: {error}", file=sys.stderr)
        return EXIT_INVALID
    if keys.created:
        print(f"spectra: seal: created the sealing key in {keys.directory}: back it up with the PKI directory; "
              "the next deploy pushes it", file=sys.stderr)  # fmt: skip
    if args.print_cert:
        sys.stdout.write(keys.active.cert_pem.decode())
        return EXIT_OK
    try:
        document = secret(args)
    except SealError as error:
        print(f"spectra: seal: {error}", file=sys.stderr)
        return EXIT_INVALID
    program = shutil.which(args.kubeseal)
    if program is None:
        print(f"spectra: seal: no kubeseal at {args.kubeseal!r}: install it (go install "
              "github.com/bitnami/sealed-secrets/cmd/kubeseal@<the controller's version>) or pass --kubeseal",
              file=sys.stderr)  # fmt: skip
        return EXIT_INVALID
    command = [program, "--cert", str(keys.cert_file), "--format", "yaml", "--scope", args.scope]
    # the Secret only on kubeseal's standard input; kubeseal reads no kubeconfig with --cert
    result = subprocess.run(command, input=json.dumps(document), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        print(f"spectra: seal: kubeseal exited {result.returncode}: {result.stderr.strip()}", file=sys.stderr)
        return EXIT_FAILED
    try:
        (sealed,) = [one for one in yaml.safe_load_all(result.stdout) if one is not None]
        sealed_secrets.sealed_secret(sealed, "kubeseal's output")
    except (ValueError, yaml.YAMLError) as error:
        print(f"spectra: seal: {error}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(result.stdout)
    return EXIT_OK
