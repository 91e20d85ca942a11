"""Test PKI made on the spot with ``cryptography``: a CA, server certificates for
127.0.0.1/localhost and a client certificate, written as PEM files.

EC P-256 keys: generating one takes well under a millisecond, so every test module can
have its own. Nothing here is trusted outside the tests that make it.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: str           # the CA certificate (PEM)
    dir: str

    def issue(self, cn: str, *, client: bool = False, hosts: tuple = ("127.0.0.1", "localhost"),
              name: str | None = None) -> tuple:
        """Writes ``<name>.crt`` / ``<name>.key`` for a server (``hosts`` as SANs) or a
        client certificate signed by this CA; returns (cert_path, key_path, serial)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        serial = x509.random_serial_number()
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
             .public_key(key.public_key()).serial_number(serial)
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if client:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        else:
            sans = []
            for h in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    sans.append(x509.DNSName(h))
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        base = os.path.join(self.dir, name or cn)
        return (_write(base + ".crt", cert.public_bytes(serialization.Encoding.PEM)),
                _write(base + ".key", _key_pem(key)), serial)


def make_ca(directory: str, cn: str = "smg test CA") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = _write(os.path.join(directory, cn.replace(" ", "-") + ".crt"), cert.public_bytes(serialization.Encoding.PEM))
    return CA(cert, key, path, directory)


@dataclass
class PKI:
    ca: CA
    server_cert: str
    server_key: str
    server_serial: int
    client_cert: str
    client_key: str


def make_pki(directory: str) -> PKI:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    ca = make_ca(str(directory))
    sc, sk, serial = ca.issue("server")
    cc, ck, _ = ca.issue("client", client=True)
    return PKI(ca, sc, sk, serial, cc, ck)


def peer_serial(der: bytes) -> int:
    """The serial number of a DER certificate (``SSLObject.getpeercert(True)``)."""
    return x509.load_der_x509_certificate(der).serial_number
