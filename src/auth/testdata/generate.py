#!/usr/bin/env python3
"""Generates the fixtures of src/auth/tests: public keys and tokens signed by OpenSSL (through
Python's `cryptography`), an implementation independent of ring and jsonwebtoken, so the tests
check that signalgate verifies what other issuers produce. Run once; the private keys are
thrown away. The tokens' times are fixed: the tests verify them at a fixed `now`.

    python3 src/auth/testdata/generate.py   # rewrites the files next to it
"""

import base64
import hashlib
import hmac
import json
import pathlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = pathlib.Path(__file__).parent
HS256_SECRET = b"signalgate-test-secret-0123456789abcdef"
CLAIMS = {
    "sub": "openssl-alice",
    "iat": 1700000000,
    "exp": 1700003600,
    "rooms": ["demo", "team-*"],
    "name": "Alice",
    "metadata": {"role": "host"},
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int, size: int) -> str:
    return b64url(n.to_bytes(size, "big"))


def jwt(alg: str, sign, kid=None) -> str:
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    message = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(CLAIMS).encode())
    return message + "." + b64url(sign(message.encode()))


def public_pem(key, fmt=serialization.PublicFormat.SubjectPublicKeyInfo) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, fmt)


def main():
    es256 = ec.generate_private_key(ec.SECP256R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def sign_es256(msg):
        r, s = decode_dss_signature(es256.sign(msg, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def sign_rs256(msg):
        return rsa_key.sign(msg, padding.PKCS1v15(), hashes.SHA256())

    def sign_ps256(msg):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return rsa_key.sign(msg, pss, hashes.SHA256())

    def sign_hs256(msg):
        return hmac.new(HS256_SECRET, msg, hashlib.sha256).digest()

    (HERE / "es256-public.pem").write_bytes(public_pem(es256))
    (HERE / "ed25519-public.pem").write_bytes(public_pem(ed))
    (HERE / "rsa-public.pem").write_bytes(public_pem(rsa_key))
    (HERE / "rsa-public-pkcs1.pem").write_bytes(
        public_pem(rsa_key, serialization.PublicFormat.PKCS1)
    )

    ec_numbers = es256.public_key().public_numbers()
    rsa_numbers = rsa_key.public_key().public_numbers()
    ed_raw = ed.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    jwks = {
        "keys": [
            {"kty": "EC", "crv": "P-256", "kid": "openssl-es256", "use": "sig",
             "x": uint(ec_numbers.x, 32), "y": uint(ec_numbers.y, 32)},
            {"kty": "RSA", "kid": "openssl-rsa", "alg": "RS256",
             "n": uint(rsa_numbers.n, 256), "e": uint(rsa_numbers.e, 3)},
            {"kty": "RSA", "kid": "openssl-rsa-pss", "alg": "PS256",
             "n": uint(rsa_numbers.n, 256), "e": uint(rsa_numbers.e, 3)},
            {"kty": "OKP", "crv": "Ed25519", "kid": "openssl-ed25519", "x": b64url(ed_raw)},
            {"kty": "EC", "crv": "P-256", "kid": "for-encryption", "use": "enc",
             "x": uint(ec_numbers.x, 32), "y": uint(ec_numbers.y, 32)},
        ]
    }
    (HERE / "jwks.json").write_text(json.dumps(jwks, indent=2) + "\n")

    tokens = {
        "hs256_secret": HS256_SECRET.decode(),
        "claims": CLAIMS,
        "hs256": jwt("HS256", sign_hs256),
        "es256": jwt("ES256", sign_es256),
        "es256_kid": jwt("ES256", sign_es256, "openssl-es256"),
        "rs256": jwt("RS256", sign_rs256),
        "rs256_kid": jwt("RS256", sign_rs256, "openssl-rsa"),
        "ps256_kid": jwt("PS256", sign_ps256, "openssl-rsa-pss"),
        "eddsa": jwt("EdDSA", ed.sign),
        "eddsa_kid": jwt("EdDSA", ed.sign, "openssl-ed25519"),
    }
    (HERE / "tokens.json").write_text(json.dumps(tokens, indent=2) + "\n")


if __name__ == "__main__":
    main()
