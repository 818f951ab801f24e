//! A deployment's provenance material: the watermark key, the signer and the trust anchors,
//! from configuration or, where none is configured, from development defaults kept in a
//! local directory (created on first use and named as development keys).

use std::path::{Path, PathBuf};

use crate::keys::{dev_keys, KeyFiles};
use crate::signer::Ed25519Signer;
use crate::ProvenanceError;

/// Where the material comes from.
#[derive(Debug, Clone, Default)]
pub struct ProvenanceSettings {
    /// The watermark key, hex (at least 16 bytes).
    pub watermark_key_hex: Option<String>,
    /// A directory made by `voxproof keys init-ca` (`signer.pem`, `signer.key`, `root.pem`).
    pub signing_keys: Option<PathBuf>,
    /// Extra PEM files of trusted roots.
    pub trust_anchors: Vec<PathBuf>,
    /// Where development defaults live.
    pub local_dir: PathBuf,
}

/// The loaded material.
pub struct Provenance {
    pub watermark_key: Vec<u8>,
    pub signer: Ed25519Signer,
    /// PEM roots a verification trusts.
    pub trust_anchors: String,
    /// Whether the signer is a development key made on this machine.
    pub development_keys: bool,
    /// Whether the watermark key was made on this machine.
    pub development_watermark_key: bool,
}

impl std::fmt::Debug for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provenance")
            .field("signer", &self.signer)
            .field("development_keys", &self.development_keys)
            .finish_non_exhaustive()
    }
}

impl ProvenanceSettings {
    pub fn load(&self) -> Result<Provenance, ProvenanceError> {
        let (watermark_key, development_watermark_key) = match &self.watermark_key_hex {
            Some(hex_key) => (parse_key(hex_key)?, false),
            None => (
                local_watermark_key(&self.local_dir.join("watermark.key"))?,
                true,
            ),
        };
        let (keys, development_keys) = match &self.signing_keys {
            Some(dir) => (KeyFiles::at(dir), false),
            None => (dev_keys(&self.local_dir.join("dev-keys"))?, true),
        };
        let signer = Ed25519Signer::load(&keys.signer_chain(), &keys.signer_key())?;
        let mut anchor_files = self.trust_anchors.clone();
        anchor_files.push(keys.root_cert());
        let dev_root = KeyFiles::at(&self.local_dir.join("dev-keys")).root_cert();
        if !anchor_files.contains(&dev_root) && dev_root.is_file() {
            anchor_files.push(dev_root);
        }
        let mut trust_anchors = String::new();
        for file in &anchor_files {
            let pem = std::fs::read_to_string(file).map_err(|source| ProvenanceError::Io {
                path: file.clone(),
                source,
            })?;
            trust_anchors.push_str(&pem);
            trust_anchors.push('\n');
        }
        Ok(Provenance {
            watermark_key,
            signer,
            trust_anchors,
            development_keys,
            development_watermark_key,
        })
    }
}

fn parse_key(hex_key: &str) -> Result<Vec<u8>, ProvenanceError> {
    let key = hex::decode(hex_key.trim()).map_err(|_| {
        ProvenanceError::Certificate("the watermark key must be hexadecimal".into())
    })?;
    if key.len() < 16 {
        return Err(ProvenanceError::Certificate(
            "the watermark key must hold at least 16 bytes (32 hex digits)".into(),
        ));
    }
    Ok(key)
}

/// A random key kept in `path`, created (owner-only) on first use. Two processes starting
/// at once agree: the key is written to a temporary file and linked into place only if no
/// key is there yet, then read back.
fn local_watermark_key(path: &Path) -> Result<Vec<u8>, ProvenanceError> {
    let io = |source| ProvenanceError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| ProvenanceError::Index(format!("no randomness: {e}")))?;
        // NamedTempFile is created owner-only (0600).
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        std::io::Write::write_all(&mut temp, hex::encode(key).as_bytes()).map_err(io)?;
        temp.as_file().sync_all().map_err(io)?;
        match temp.persist_noclobber(path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e.error)),
        }
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_key(&text)
}
