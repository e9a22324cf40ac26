"""Throw-away certificates for the TLS tests, made with ``openssl``.

:func:`openssl_certificates` writes a test CA (``ca.key``, ``ca.crt``), a server certificate
it signed (``server.key``, ``server.crt``) and, if asked, a client certificate
(``client.key``, ``client.crt``), each valid for two days. Each server harness wraps the
files it needs into its own ``TlsFiles``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def openssl_certificates(directory: Path, *, san: str, usage: str, client: bool) -> None:
    """Write the CA, the server certificate and (``client``) a client one into ``directory``.

    Args:
        directory: an existing directory.
        san: the server certificate's ``subjectAltName`` (``DNS:localhost``, …).
        usage: its ``extendedKeyUsage`` (``serverAuth`` or ``serverAuth,clientAuth``).
        client: whether to make a client certificate (``CN=baton``) too.

    Raises:
        RuntimeError: ``openssl`` is not installed.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed; the TLS tests need it to make certificates")
    d = directory
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (d / "server.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        f"keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
    )
    commands = [
        [openssl, "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt",
         "-days", "2", "-subj", "/CN=baton-test-ca",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr",
         "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt",
         "-CAkey", d / "ca.key", "-CAcreateserial", "-out", d / "server.crt", "-days", "2",
         "-extfile", d / "server.ext"],
    ]  # fmt: skip
    if client:
        (d / "client.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=clientAuth\n"
        )
        commands += [
            [openssl, "req", *ec, "-keyout", d / "client.key", "-out", d / "client.csr",
             "-subj", "/CN=baton"],
            [openssl, "x509", "-req", "-in", d / "client.csr", "-CA", d / "ca.crt",
             "-CAkey", d / "ca.key", "-CAcreateserial", "-out", d / "client.crt", "-days", "2",
             "-extfile", d / "client.ext"],
        ]  # fmt: skip
    for command in commands:
        subprocess.run([str(arg) for arg in command], check=True, capture_output=True)
