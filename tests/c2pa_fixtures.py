"""Test fixtures for content credentials, made here with no network: a certificate chain (root ->
intermediate -> signer, ES256, the signer with the extensions C2PA requires: not a CA, critical
digitalSignature, emailProtection EKU) and files signed with c2pa-python's Builder."""
from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CAPTURED = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


@dataclass(frozen=True)
class Chain:
    root_pem: bytes
    signer_chain_pem: bytes   # signer, then intermediate
    signer_key_pem: bytes


def _cert(common_name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
          ca: bool) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "deepfake-detect tests")])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(**usage), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def make_chain() -> Chain:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    root = _cert("Test Root CA", keys[0], None, ca=True)
    intermediate = _cert("Test Intermediate CA", keys[1], (root, keys[0]), ca=True)
    signer = _cert("Test Signer", keys[2], (intermediate, keys[1]), ca=False)

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    key = keys[2].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Chain(pem(root), pem(signer) + pem(intermediate), key)


def sign(source: Path, dest: Path, chain: Chain, mime: str, source_type: str = GENERATED) -> Path:
    """`source` signed into `dest`, its manifest declaring one c2pa.created action of `source_type`."""
    from c2pa import Builder, C2paSignerInfo, C2paSigningAlg, Signer

    manifest = {"claim_generator_info": [{"name": "test-generator", "version": "1.0"}], "title": dest.name,
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": source_type,
                     "softwareAgent": {"name": "Test Diffusion", "version": "2.1"}}]}}]}
    signer = Signer.from_info(C2paSignerInfo(C2paSigningAlg.ES256, chain.signer_chain_pem, chain.signer_key_pem, None))
    with Builder(manifest) as builder, open(source, "rb") as src:
        out = io.BytesIO()
        builder.sign(signer, mime, src, out)
    dest.write_bytes(out.getvalue())
    return dest
