"""A certificate authority of the test's own and a server certificate it signed, made with the
openssl command: for https servers on loopback that a client verifies by name."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path  # what the client trusts (SSL_CERT_FILE)
    certificate: Path
    key: Path


def available() -> bool:
    return shutil.which("openssl") is not None


def make_certificates(directory: Path, hostname: str) -> Certificates:
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hostname}", "-keyout", "server.key",
            "-out", "server.csr")
    (directory / "server.ext").write_text(f"subjectAltName=DNS:{hostname}\nbasicConstraints=CA:FALSE\n"
                                          "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "server.ext", "-out", "server.pem")
    return Certificates(ca=directory / "ca.pem", certificate=directory / "server.pem", key=directory / "server.key")
