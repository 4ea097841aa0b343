"""Throwaway certificate authorities and the certificates they issue (ECDSA P-256: quick to make,
accepted by Go, OpenSSL, Redis, PostgreSQL and MariaDB).

`CertificateAuthority` serves the control plane (serving and client certificates, a webhook's CA);
`make_pki` writes the usual set for a TLS database server: a CA, a server and a client certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def write_private(path: Path, data: bytes) -> None:
    """Write key material readable by its owner only."""
    path.write_bytes(data)
    path.chmod(0o600)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    # Five minutes in the past: tolerate a clock that differs a little between the parties.
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=days)
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA whose certificate and key live in `<directory>/<name>.crt|key`; it issues leaf certificates."""

    cert_path: Path
    key_path: Path

    @classmethod
    def create(cls, directory: Path, name: str, days: int = 7) -> CertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        cert = (
            _validity(x509.CertificateBuilder(), days)
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory / f"{name}.crt", directory / f"{name}.key")
        ca.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private(ca.key_path, key_pem(key))
        return ca

    @property
    def cert_pem(self) -> bytes:
        return self.cert_path.read_bytes()

    def issue(
        self,
        directory: Path,
        name: str,
        *,
        common_name: str,
        organizations: Iterable[str] = (),
        hosts: Iterable[str] = (),
        server: bool = False,
        client: bool = False,
        days: int = 7,
    ) -> tuple[Path, Path]:
        """Issue a leaf certificate; returns (cert path, key path) as `<directory>/<name>.crt|key`.

        For client certificates Kubernetes reads the user from CN and the groups from O.
        `hosts` become IP or DNS subjectAltNames.
        """
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{self.key_path}: expected an EC key")
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        builder = (
            _validity(x509.CertificateBuilder(), days)
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private(key_path, key_pem(key))
        return cert_path, key_path


@dataclass(frozen=True)
class PKI:
    """A throwaway CA with one server certificate (localhost, 127.0.0.1) and one client certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(folder: Path, owner: tuple[int, int] | None = None) -> PKI:
    """Write `ca.crt`, `server.crt|key` and `client.crt|key` (PEM) into `folder`; keys are mode 0600.
    `owner` (uid, gid) is given the files, for a server that runs as another user."""
    ca = CertificateAuthority.create(folder, "ca", days=2)
    server_cert, server_key = ca.issue(
        folder, "server", common_name="localhost", hosts=LOOPBACK_HOSTS, server=True, days=2
    )
    client_cert, client_key = ca.issue(
        folder, "client", common_name="statestore test client", client=True, days=2
    )
    pki = PKI(ca.cert_path, server_cert, server_key, client_cert, client_key)
    if owner is not None:
        for path in (ca.cert_path, ca.key_path, server_cert, server_key, client_cert, client_key):
            os.chown(path, *owner)
    return pki
