"""A throw-away PKI for the simulator: a CA, a server certificate, and impostors.

The client under test must verify the server's certificate exactly as it would against a
real RHV-M, so the simulator serves a certificate chained to a CA that the test hands to
the client. Two impostors let a test check that verification actually happens: one signed
by an unrelated CA ("wrong CA"), one signed by the right CA for another host name
("wrong host").
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names the good certificate is valid for: the simulator only listens on loopback.
SERVER_DNS_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class TestPki:
    """Everything the simulator serves and the CA a client must trust."""

    __test__ = False  # not a pytest test class, despite the name

    ca_pem: bytes
    server: CertPair
    wrong_ca_pem: bytes
    wrong_ca_server: CertPair
    wrong_host_server: CertPair

    def write_ca_file(self, path: str | os.PathLike[str]) -> str:
        """Write the CA certificate a client must trust; return the path written."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.ca_pem)
        return str(p)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: generated in microseconds, accepted by every TLS stack libcurl can use.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kvmguest oVirt simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    # A day of slack before "now" so a skewed clock never makes the cert "not yet valid".
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=365)


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    not_before, not_after = _validity()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_server(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    dns_names: tuple[str, ...],
    ips: tuple[str, ...],
) -> CertPair:
    key = _key()
    not_before, not_after = _validity()
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0] if dns_names else ips[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def generate_pki() -> TestPki:
    """A fresh CA, a server certificate for 127.0.0.1/localhost, and two impostors."""
    ca_cert, ca_key = _make_ca("kvmguest oVirt simulator CA")
    wrong_cert, wrong_key = _make_ca("unrelated CA")
    return TestPki(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        server=_make_server(ca_cert, ca_key, SERVER_DNS_NAMES, SERVER_IPS),
        wrong_ca_pem=wrong_cert.public_bytes(serialization.Encoding.PEM),
        wrong_ca_server=_make_server(wrong_cert, wrong_key, SERVER_DNS_NAMES, SERVER_IPS),
        # Right CA, wrong identity: only host-name verification can catch this one.
        wrong_host_server=_make_server(ca_cert, ca_key, ("rhevm.invalid",), ("192.0.2.1",)),
    )
