//! Provenance for voxproof audio: the signing credentials (an Ed25519 certificate chain),
//! the signed C2PA manifest every file carries, reading it back, and the local index of
//! provenance records that `voxproof synth` keeps.
//!
//! The watermark itself lives in `voxproof-watermark`; this crate names its payload in the
//! manifest's soft-binding assertion, so that a verifier can check that the mark in the audio
//! and the signed manifest agree, and trace a file whose manifest was stripped.

pub mod deployment;
pub mod index;
pub mod keys;
pub mod manifest;
pub mod signer;
pub mod verify;

use std::path::PathBuf;

pub use deployment::{Provenance, ProvenanceSettings};
pub use index::LocalIndex;
pub use keys::{dev_keys, init_ca, CaOptions, KeyFiles};
pub use manifest::{
    read_manifest, sidecar_path, sign_file, Container, ManifestReport, ManifestState,
    ProvenanceRecord,
};
pub use signer::Ed25519Signer;
pub use verify::{
    examine, judge, verify_file, Examination, RecordLookup, Verdict, Verification, VerifyOptions,
};

/// Why a provenance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A credential is missing, malformed, expired or unfit for claim signing.
    #[error("signing certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    UnsupportedFormat(String),
    /// The C2PA library refused to sign or read.
    #[error("C2PA: {0}")]
    C2pa(String),
    /// The audio could not be decoded for watermark detection.
    #[error("{0}")]
    Decode(String),
    #[error("provenance index: {0}")]
    Index(String),
}
