//! The Ed25519 claim signer: a private key and the certificate chain it signs under, checked
//! when loaded so that a bad credential fails at startup with a message that says what is
//! wrong, not later inside a validator's report.

use std::path::Path;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer as _, SigningKey};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ProvenanceError;

/// Extended key usages C2PA validators accept on a claim-signing certificate.
const ACCEPTED_EKUS: [&str; 4] = [
    "1.3.6.1.4.1.62558.2.1",     // C2PA claim signing
    "1.3.6.1.5.5.7.3.36",        // document signing
    "1.3.6.1.5.5.7.3.4",         // email protection
    "1.3.6.1.4.1.311.76.59.1.9", // Microsoft C2PA signing
];

/// Signs C2PA claims with Ed25519.
pub struct Ed25519Signer {
    key: SigningKey,
    /// DER certificates, the leaf first.
    chain: Vec<Vec<u8>>,
    /// The leaf's subject, for messages and reports.
    subject: String,
}

impl std::fmt::Debug for Ed25519Signer {
    /// Names the certificate, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, ProvenanceError> {
    std::fs::read_to_string(path).map_err(|source| ProvenanceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The DER certificates of a PEM bundle, in order.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, ProvenanceError> {
    let mut certs = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| {
            ProvenanceError::Certificate(format!("the certificate file is not valid PEM: {e}"))
        })?;
        if block.label == "CERTIFICATE" {
            certs.push(block.contents);
        }
    }
    Ok(certs)
}

impl Ed25519Signer {
    /// Loads the chain (leaf first, then intermediates) and the leaf's private key.
    pub fn load(chain_path: &Path, key_path: &Path) -> Result<Self, ProvenanceError> {
        let chain_pem = read(chain_path)?;
        let key_pem = read(key_path)?;
        Self::from_pem(&chain_pem, &key_pem).map_err(|e| match e {
            ProvenanceError::Certificate(message) => {
                ProvenanceError::Certificate(format!("{}: {message}", chain_path.display()))
            }
            other => other,
        })
    }

    /// [`Ed25519Signer::load`] from PEM text.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, ProvenanceError> {
        let chain = pem_certificates(chain_pem)?;
        let Some(leaf_der) = chain.first() else {
            return Err(ProvenanceError::Certificate(
                "no certificate found in the chain file".into(),
            ));
        };
        if chain.len() < 2 {
            return Err(ProvenanceError::Certificate(
                "the chain holds only the signing certificate; C2PA needs its issuer too \
                 (leaf first, then the intermediate)"
                    .into(),
            ));
        }
        let key = SigningKey::from_pkcs8_pem(key_pem).map_err(|e| {
            ProvenanceError::Certificate(format!(
                "the signing key is not an Ed25519 PKCS#8 PEM key: {e}"
            ))
        })?;
        let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(|e| {
            ProvenanceError::Certificate(format!("the signing certificate does not parse: {e}"))
        })?;
        let subject = leaf.subject().to_string();
        check_leaf(&leaf, &subject, &key)?;
        Ok(Self {
            key,
            chain,
            subject,
        })
    }

    /// The signing certificate's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// The checks a C2PA validator would fail the manifest on, made up front.
fn check_leaf(
    leaf: &X509Certificate<'_>,
    subject: &str,
    key: &SigningKey,
) -> Result<(), ProvenanceError> {
    let fail = |what: String| Err(ProvenanceError::Certificate(format!("{subject}: {what}")));
    let validity = leaf.validity();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if now > validity.not_after.timestamp() {
        return fail(format!(
            "the signing certificate expired on {}; issue a new one (voxproof keys init-ca)",
            validity.not_after
        ));
    }
    if now < validity.not_before.timestamp() {
        return fail(format!(
            "the signing certificate is not valid before {}",
            validity.not_before
        ));
    }
    if leaf.public_key().subject_public_key.data.as_ref() != key.verifying_key().as_bytes() {
        return fail("the private key does not belong to the signing certificate".into());
    }
    if leaf.is_ca() {
        return fail(
            "the signing certificate is a CA certificate; C2PA needs an end-entity certificate"
                .into(),
        );
    }
    let eku = leaf.extended_key_usage().map_err(|e| {
        ProvenanceError::Certificate(format!("{subject}: bad extended key usage: {e}"))
    })?;
    let accepted = eku.is_some_and(|eku| {
        let eku = eku.value;
        !eku.any
            && (eku.email_protection
                || eku
                    .other
                    .iter()
                    .any(|oid| ACCEPTED_EKUS.contains(&oid.to_id_string().as_str())))
    });
    if !accepted {
        return fail(format!(
            "the signing certificate lacks an extended key usage C2PA accepts for claim \
             signing (add {} , the C2PA claim-signing usage)",
            ACCEPTED_EKUS[0]
        ));
    }
    let digital_signature = leaf
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|usage| usage.value.digital_signature());
    if !digital_signature {
        return fail("the signing certificate lacks the digitalSignature key usage".into());
    }
    let has_aki = leaf.extensions().iter().any(|ext| {
        matches!(
            ext.parsed_extension(),
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(_)
        )
    });
    if !has_aki {
        return fail("the signing certificate lacks an authority key identifier".into());
    }
    Ok(())
}

impl c2pa::Signer for Ed25519Signer {
    fn sign(&self, data: &[u8]) -> c2pa::Result<Vec<u8>> {
        Ok(self.key.sign(data).to_bytes().to_vec())
    }

    fn alg(&self) -> c2pa::SigningAlg {
        c2pa::SigningAlg::Ed25519
    }

    fn certs(&self) -> c2pa::Result<Vec<Vec<u8>>> {
        Ok(self.chain.clone())
    }

    /// The COSE signature structure carries the chain, the 64-byte signature and headers.
    fn reserve_size(&self) -> usize {
        2048 + self.chain.iter().map(Vec::len).sum::<usize>()
    }
}
