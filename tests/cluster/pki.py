"""The local control plane's keys and certificates, made with `cryptography`.

Owns: a CA, the API server's serving certificate for 127.0.0.1/localhost and any other
address it is given (signed by the CA), the service-account RSA key (the API server verifies
and signs tokens with it, the controller manager signs with it too), and the static bearer
tokens (the admin's; a real node's kubelet and kube-proxy get theirs with `add_token`).
Clients of the API server authenticate with tokens only. `issue` signs the certificates a
real node needs: the kubelet's serving certificate, and the client certificate the API
server shows the kubelet (for logs and exec).
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Pki:
    """Paths of the files `write_pki` made, plus the admin token (never log it)."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    token_file: Path
    admin_token: str

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.read_bytes()


def _private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_secret(path: Path, data: bytes) -> Path:
    path.touch(mode=0o600)
    path.write_bytes(data)
    return path


def _certificate(subject: str, public_key: ec.EllipticCurvePublicKey, issuer: x509.Name,
                 signer: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                       critical=False)
    )


def write_pki(directory: Path, addresses: tuple[str, ...] = ("127.0.0.1",)) -> Pki:
    """Create the CA, serving certificate (for `addresses` too), service-account key and
    admin token in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whisperfleet-test-ca")])
    ca_cert = (
        _certificate("whisperfleet-test-ca", ca_key.public_key(), ca_name, ca_key, ca=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    serving_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.DNSName("kubernetes"),
             x509.DNSName("kubernetes.default.svc"),
             *(x509.IPAddress(ipaddress.ip_address(a))
               for a in dict.fromkeys(("127.0.0.1", *addresses))),
             x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]  # the `kubernetes` Service IP
    serving_cert = (
        _certificate("kube-apiserver", serving_key.public_key(), ca_name, ca_key, ca=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    # RSA because every service-account token consumer handles RS256.
    service_account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    admin_token = secrets.token_urlsafe(32)

    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    serving_path = directory / "apiserver.crt"
    serving_path.write_bytes(serving_cert.public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca_cert=ca_path,
        ca_key=_write_secret(directory / "ca.key", _private_pem(ca_key)),
        serving_cert=serving_path,
        serving_key=_write_secret(directory / "apiserver.key", _private_pem(serving_key)),
        service_account_key=_write_secret(directory / "service-account.key",
                                          _private_pem(service_account_key)),
        # token,user,uid,"group1,group2" — the static token file of --token-auth-file.
        token_file=_write_secret(directory / "tokens.csv",
                                 f'{admin_token},admin,admin-uid,"system:masters"\n'.encode()),
        admin_token=admin_token,
    )


def add_token(pki: Pki, user: str, groups: tuple[str, ...] = ()) -> str:
    """A new static bearer token for `user` in `groups` (read when the API server starts)."""
    token = secrets.token_urlsafe(32)
    with pki.token_file.open("a", encoding="utf-8") as tokens:
        tokens.write(f'{token},{user},{user}-uid,"{",".join(groups)}"\n')
    return token


def issue(pki: Pki, name: str, *, ip_addresses: tuple[str, ...] = (),
          dns_names: tuple[str, ...] = (), client: bool = False) -> tuple[Path, Path]:
    """A certificate signed by the CA (server, or `client` with CN = `name`); returns the
    paths of the certificate and of its key, both in the PKI folder."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(pki.ca_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (_certificate(name, key.public_key(), ca.subject, ca_key, ca=False)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    names = [*(x509.DNSName(n) for n in dns_names),
             *(x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses)]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert_path = pki.ca_cert.parent / f"{name}.crt"
    cert_path.write_bytes(builder.sign(ca_key, hashes.SHA256())
                          .public_bytes(serialization.Encoding.PEM))
    return cert_path, _write_secret(pki.ca_cert.parent / f"{name}.key", _private_pem(key))
