//! The two things authentication needs from an X.509 certificate, read
//! from its DER without a full parser:
//!
//! * [`tls_server_end_point`]: SCRAM channel binding data (RFC 5929 §4.1,
//!   as PostgreSQL computes it): the certificate hashed with the hash of its
//!   signature algorithm, SHA-256 when that is MD5 or SHA-1. Algorithms
//!   without a single hash (RSASSA-PSS, Ed25519, Ed448) give `None`: libpq
//!   and PostgreSQL cannot bind to such a certificate either, so pgbalancer
//!   does not offer `SCRAM-SHA-256-PLUS` with one.
//! * [`subject_common_name`]: the first CN of the subject, for the `cert`
//!   method (PostgreSQL compares it to the user name).
//!
//! Readers are total: any bytes give `Some` or `None`, never a panic, and
//! nothing is allocated in proportion to a declared length.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0; // [0] EXPLICIT

/// id-at-commonName, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The hash PostgreSQL uses for `tls-server-end-point` with a signature
/// algorithm (by its OID's DER contents).
fn end_point_hash(sig_oid: &[u8]) -> Option<Hash> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04]; // 1.2.840.10045.4
    const DSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03]; // 1.2.840.10040.4.3
    const DSA_SHA2: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03]; // 2.16.840.1.101.3.4.3
    if let Some(rest) = sig_oid.strip_prefix(RSA) {
        return match rest {
            [0x04] | [0x05] | [0x0b] => Some(Hash::Sha256), // md5, sha1 (→ SHA-256), sha256 WithRSAEncryption
            [0x0c] => Some(Hash::Sha384),
            [0x0d] => Some(Hash::Sha512),
            [0x0e] => Some(Hash::Sha224),
            _ => None, // RSASSA-PSS (.10) and others
        };
    }
    if let Some(rest) = sig_oid.strip_prefix(ECDSA) {
        return match rest {
            [0x01] | [0x03, 0x02] => Some(Hash::Sha256), // ecdsa-with-SHA1 (→ SHA-256), -SHA256
            [0x03, 0x01] => Some(Hash::Sha224),
            [0x03, 0x03] => Some(Hash::Sha384),
            [0x03, 0x04] => Some(Hash::Sha512),
            _ => None,
        };
    }
    if sig_oid == DSA_SHA1 {
        return Some(Hash::Sha256);
    }
    match sig_oid.strip_prefix(DSA_SHA2) {
        Some([0x01]) => Some(Hash::Sha224),
        Some([0x02]) => Some(Hash::Sha256),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// `tls-server-end-point` channel binding data for a certificate (DER):
/// its hash as RFC 5929 and PostgreSQL define it, or `None` when the
/// signature algorithm names no usable hash (or the DER is not a
/// certificate).
pub fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    let (tag, body, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _tbs, rest) = tlv(body)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, alg, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, _) = tlv(alg)?;
    if tag != OID {
        return None;
    }
    Some(match end_point_hash(oid)? {
        Hash::Sha224 => Sha224::digest(cert).to_vec(),
        Hash::Sha256 => Sha256::digest(cert).to_vec(),
        Hash::Sha384 => Sha384::digest(cert).to_vec(),
        Hash::Sha512 => Sha512::digest(cert).to_vec(),
    })
}

/// The first common name (CN) of a certificate's subject, as PostgreSQL
/// reads it for the `cert` method: UTF8String, PrintableString, IA5String
/// or TeletexString; `None` when there is none, it is another string type,
/// not UTF-8, or holds a NUL byte (PostgreSQL refuses those too).
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (tag, body, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(body)?;
    if tag != SEQUENCE {
        return None;
    }
    // version [0] (optional), serialNumber, signature, issuer, validity, subject.
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == VERSION {
        rest = after;
    }
    let (tag, _, after) = tlv(rest)?;
    if tag != INTEGER {
        return None;
    }
    rest = after;
    for _ in 0..3 {
        let (tag, _, after) = tlv(rest)?;
        if tag != SEQUENCE {
            return None;
        }
        rest = after;
    }
    let (tag, mut rdns, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    while !rdns.is_empty() {
        let (tag, mut set, after) = tlv(rdns)?;
        if tag != SET {
            return None;
        }
        rdns = after;
        while !set.is_empty() {
            let (tag, atv, after) = tlv(set)?;
            if tag != SEQUENCE {
                return None;
            }
            set = after;
            let (tag, oid, value) = tlv(atv)?;
            if tag != OID || oid != OID_COMMON_NAME {
                continue;
            }
            let (tag, text, _) = tlv(value)?;
            // UTF8String, PrintableString, TeletexString, IA5String.
            if !matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) || text.contains(&0) {
                return None;
            }
            return String::from_utf8(text.to_vec()).ok();
        }
    }
    None
}

/// One DER tag-length-value: (tag, value, what follows). Low tag numbers
/// only; definite lengths of at most four length bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag number form: nothing we read uses it
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None; // indefinite length, or absurd
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(alg: &'static rcgen::SignatureAlgorithm, cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "pgbalancer tests");
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate_for(alg).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256, Some("a"));
        assert_eq!(tls_server_end_point(&p256), Some(Sha256::digest(&p256).to_vec()));
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384, Some("a"));
        assert_eq!(tls_server_end_point(&p384), Some(Sha384::digest(&p384).to_vec()));
        // Ed25519 names no hash: no channel binding (as libpq and PostgreSQL).
        let ed = cert(&rcgen::PKCS_ED25519, Some("a"));
        assert_eq!(tls_server_end_point(&ed), None);
    }

    #[test]
    fn oid_table() {
        let rsa = |last: u8| [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last];
        assert_eq!(end_point_hash(&rsa(0x04)), Some(Hash::Sha256), "md5WithRSAEncryption");
        assert_eq!(end_point_hash(&rsa(0x05)), Some(Hash::Sha256), "sha1WithRSAEncryption");
        assert_eq!(end_point_hash(&rsa(0x0b)), Some(Hash::Sha256));
        assert_eq!(end_point_hash(&rsa(0x0c)), Some(Hash::Sha384));
        assert_eq!(end_point_hash(&rsa(0x0d)), Some(Hash::Sha512));
        assert_eq!(end_point_hash(&rsa(0x0e)), Some(Hash::Sha224));
        assert_eq!(end_point_hash(&rsa(0x0a)), None, "RSASSA-PSS");
        let ecdsa = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
        assert_eq!(end_point_hash(&ecdsa), Some(Hash::Sha512));
        assert_eq!(end_point_hash(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]), Some(Hash::Sha256));
        assert_eq!(end_point_hash(&[0x2b, 0x65, 0x70]), None, "Ed25519");
        assert_eq!(end_point_hash(&[]), None);
    }

    #[test]
    fn common_name() {
        assert_eq!(subject_common_name(&cert(&rcgen::PKCS_ECDSA_P256_SHA256, Some("app"))).as_deref(), Some("app"));
        let utf8 = cert(&rcgen::PKCS_ECDSA_P256_SHA256, Some("jürgen"));
        assert_eq!(subject_common_name(&utf8).as_deref(), Some("jürgen"));
        assert_eq!(subject_common_name(&cert(&rcgen::PKCS_ECDSA_P256_SHA256, None)), None);
    }

    #[test]
    fn readers_are_total() {
        use rand::{Rng, SeedableRng};
        let base = cert(&rcgen::PKCS_ECDSA_P256_SHA256, Some("app"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(5929);
        for cut in 0..base.len() {
            let _ = tls_server_end_point(&base[..cut]);
            assert_eq!(subject_common_name(&base[..cut]), None, "truncated at {cut}");
        }
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            let _ = tls_server_end_point(&b);
            let _ = subject_common_name(&b);
        }
        for junk in [&[][..], &[0x30], &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], &[0x30, 0x80, 0, 0], &[0x1f, 0, 0]] {
            assert_eq!(tls_server_end_point(junk), None);
            assert_eq!(subject_common_name(junk), None);
        }
    }
}
