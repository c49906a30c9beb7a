//! jsonwebtoken's cryptography, carried out by `ring` — the one crypto library of this
//! process (rustls, quinn and rcgen use it too).
//!
//! jsonwebtoken 10+ delegates signing and verification to a pluggable [`CryptoProvider`];
//! its built-in providers bring either aws-lc-rs (a second crypto library with a C build) or
//! some 30 RustCrypto crates. This module is the thin adapter that hands each operation to
//! ring's primitives (`hmac`, `UnparsedPublicKey::verify`, `RsaPublicKeyComponents::verify`,
//! the key pairs' `sign`): no cryptography is implemented here. Tokens signed by OpenSSL
//! (`testdata/`, one per algorithm family) check it against another implementation.

use std::sync::OnceLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, new_error};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use ring::{digest, hmac};

/// The provider, installed as jsonwebtoken's process default by [`ensure_installed`].
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key,
        ed_pub_components_from_private_key,
        compute_digest,
    },
};

/// Makes [`RING_PROVIDER`] jsonwebtoken's provider (once per process). If something else
/// installed a provider first, that one stays (jsonwebtoken allows one per process) and a
/// warning says so.
pub fn ensure_installed() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Err(other) = RING_PROVIDER.install_default()
            && !std::ptr::eq(other, &RING_PROVIDER)
        {
            tracing::warn!(
                "jsonwebtoken already has a crypto provider; tokens are checked with it"
            );
        }
    });
}

fn unsupported() -> Error {
    new_error(ErrorKind::UnsupportedAlgorithm)
}

fn sig_error() -> signature::Error {
    signature::Error::new()
}

fn check_family(family: AlgorithmFamily, algorithm: Algorithm) -> Result<(), Error> {
    if family == algorithm.family() {
        Ok(())
    } else {
        Err(new_error(ErrorKind::InvalidKeyFormat))
    }
}

// --- verification ----------------------------------------------------------------------------

enum VerifyKey {
    Hmac(hmac::Key),
    /// A public key in the form ring's `UnparsedPublicKey` takes: an uncompressed EC point,
    /// the 32 bytes of an Ed25519 key, or a PKCS#1 `RSAPublicKey`.
    Public {
        algorithm: &'static dyn sig::VerificationAlgorithm,
        bytes: Vec<u8>,
    },
    RsaComponents {
        params: &'static sig::RsaParameters,
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

struct RingVerifier {
    algorithm: Algorithm,
    key: VerifyKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let verified = match &self.key {
            VerifyKey::Hmac(key) => hmac::verify(key, msg, signature),
            VerifyKey::Public { algorithm, bytes } => {
                sig::UnparsedPublicKey::new(*algorithm, bytes).verify(msg, signature)
            }
            VerifyKey::RsaComponents { params, n, e } => {
                sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
        };
        verified.map_err(|_| sig_error())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn hmac_algorithm(algorithm: Algorithm) -> Option<hmac::Algorithm> {
    match algorithm {
        Algorithm::HS256 => Some(hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

fn rsa_verification(algorithm: Algorithm) -> Option<&'static sig::RsaParameters> {
    match algorithm {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&sig::RSA_PSS_2048_8192_SHA512),
        _ => None,
    }
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let algorithm = *algorithm;
    check_family(key.family(), algorithm)?;
    let verify_key = if let Some(hmac_alg) = hmac_algorithm(algorithm) {
        VerifyKey::Hmac(hmac::Key::new(hmac_alg, key.try_get_as_bytes()?))
    } else if let Some(params) = rsa_verification(algorithm) {
        match key.kind() {
            DecodingKeyKind::SecretOrDer(der) => VerifyKey::Public {
                algorithm: params,
                bytes: der.clone(),
            },
            DecodingKeyKind::RsaModulusExponent { n, e } => VerifyKey::RsaComponents {
                params,
                n: n.clone(),
                e: e.clone(),
            },
        }
    } else {
        // JWS (RFC 7518 §3.4) carries ECDSA signatures as fixed-width r || s.
        let algorithm: &'static dyn sig::VerificationAlgorithm = match algorithm {
            Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            Algorithm::EdDSA => &sig::ED25519,
            _ => return Err(unsupported()),
        };
        VerifyKey::Public {
            algorithm,
            bytes: key.try_get_as_bytes()?.to_vec(),
        }
    };
    Ok(Box::new(RingVerifier {
        algorithm,
        key: verify_key,
    }))
}

// --- signing ---------------------------------------------------------------------------------

enum SignKey {
    Hmac(hmac::Key),
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
    Rsa(&'static dyn sig::RsaEncoding, sig::RsaKeyPair),
}

struct RingSigner {
    algorithm: Algorithm,
    key: SignKey,
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        match &self.key {
            SignKey::Hmac(key) => Ok(hmac::sign(key, msg).as_ref().to_vec()),
            SignKey::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| sig_error()),
            SignKey::Ed25519(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
            SignKey::Rsa(encoding, pair) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &SystemRandom::new(), msg, &mut out)
                    .map_err(|_| sig_error())?;
                Ok(out)
            }
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn ecdsa_signing(algorithm: Algorithm) -> Option<&'static sig::EcdsaSigningAlgorithm> {
    match algorithm {
        Algorithm::ES256 => Some(&sig::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => Some(&sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        _ => None,
    }
}

fn rsa_signing(algorithm: Algorithm) -> Option<&'static dyn sig::RsaEncoding> {
    match algorithm {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_SHA256),
        Algorithm::RS384 => Some(&sig::RSA_PKCS1_SHA384),
        Algorithm::RS512 => Some(&sig::RSA_PKCS1_SHA512),
        Algorithm::PS256 => Some(&sig::RSA_PSS_SHA256),
        Algorithm::PS384 => Some(&sig::RSA_PSS_SHA384),
        Algorithm::PS512 => Some(&sig::RSA_PSS_SHA512),
        _ => None,
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let algorithm = *algorithm;
    check_family(key.family(), algorithm)?;
    let bytes = key.as_bytes();
    let sign_key = if let Some(hmac_alg) = hmac_algorithm(algorithm) {
        SignKey::Hmac(hmac::Key::new(hmac_alg, bytes))
    } else if let Some(signing) = ecdsa_signing(algorithm) {
        let pair = sig::EcdsaKeyPair::from_pkcs8(signing, bytes, &SystemRandom::new())
            .map_err(|_| new_error(ErrorKind::InvalidEcdsaKey))?;
        SignKey::Ecdsa(pair)
    } else if let Some(encoding) = rsa_signing(algorithm) {
        let pair = sig::RsaKeyPair::from_der(bytes)
            .or_else(|_| sig::RsaKeyPair::from_pkcs8(bytes))
            .map_err(|e| new_error(ErrorKind::InvalidRsaKey(e.to_string())))?;
        SignKey::Rsa(encoding, pair)
    } else if algorithm == Algorithm::EdDSA {
        let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)
            .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?;
        SignKey::Ed25519(pair)
    } else {
        return Err(unsupported());
    };
    Ok(Box::new(RingSigner {
        algorithm,
        key: sign_key,
    }))
}

// --- JWK helpers (used by jsonwebtoken to build JWKs from keys) ------------------------------

fn ec_pub_components_from_private_key(
    pkcs8: &[u8],
    algorithm: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    let (signing, curve, half) = match algorithm {
        Algorithm::ES256 => (
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            EllipticCurve::P256,
            32,
        ),
        Algorithm::ES384 => (
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            EllipticCurve::P384,
            48,
        ),
        _ => return Err(new_error(ErrorKind::InvalidEcdsaKey)),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8, &SystemRandom::new())
        .map_err(|_| new_error(ErrorKind::InvalidEcdsaKey))?;
    match pair.public_key().as_ref().split_first() {
        Some((4, point)) if point.len() == 2 * half => {
            let (x, y) = point.split_at(half);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(new_error(ErrorKind::InvalidEcdsaKey)),
    }
}

fn ed_pub_components_from_private_key(
    pkcs8: &[u8],
    curve: &EllipticCurve,
) -> Result<Vec<u8>, Error> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(unsupported());
    }
    let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?;
    Ok(pair.public_key().as_ref().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}
