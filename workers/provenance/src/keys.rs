//! Signing credentials: a three-level Ed25519 certificate authority (root → intermediate →
//! claim-signing leaf) made with `rcgen`, and the files it lives in.
//!
//! C2PA validators refuse a signing certificate without an extended key usage they accept,
//! without the digitalSignature key usage or without an authority key identifier, and they
//! refuse self-signed leaves; the leaf made here has all three and is signed by an
//! intermediate, so the root alone is the trust anchor a verifier needs.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use time::{Duration, OffsetDateTime};

use crate::ProvenanceError;

/// The C2PA claim-signing extended key usage, `1.3.6.1.4.1.62558.2.1`.
pub const C2PA_CLAIM_SIGNING_EKU: &[u64] = &[1, 3, 6, 1, 4, 1, 62558, 2, 1];

/// File names inside a key directory.
pub const ROOT_CERT: &str = "root.pem";
pub const ROOT_KEY: &str = "root.key";
pub const INTERMEDIATE_CERT: &str = "intermediate.pem";
pub const INTERMEDIATE_KEY: &str = "intermediate.key";
/// The leaf certificate followed by the intermediate: what a manifest carries.
pub const SIGNER_CHAIN: &str = "signer.pem";
pub const SIGNER_KEY: &str = "signer.key";

/// What to put in the certificates.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// Organization named in every certificate.
    pub organization: String,
    /// Common name of the signing (leaf) certificate.
    pub signer_name: String,
    /// Lifetimes, counted from now.
    pub root_days: i64,
    pub intermediate_days: i64,
    pub signer_days: i64,
}

impl CaOptions {
    pub fn new(organization: &str) -> Self {
        Self {
            organization: organization.to_string(),
            signer_name: format!("{organization} claim signer"),
            root_days: 3650,
            intermediate_days: 1825,
            signer_days: 397,
        }
    }
}

/// Where [`init_ca`] wrote the credentials.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub dir: PathBuf,
}

impl KeyFiles {
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join(ROOT_CERT)
    }
    pub fn signer_chain(&self) -> PathBuf {
        self.dir.join(SIGNER_CHAIN)
    }
    pub fn signer_key(&self) -> PathBuf {
        self.dir.join(SIGNER_KEY)
    }
    /// Whether a complete signer (chain, key and the root it chains to) is there.
    pub fn complete(&self) -> bool {
        [self.root_cert(), self.signer_chain(), self.signer_key()]
            .iter()
            .all(|p| p.is_file())
    }
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> ProvenanceError + '_ {
    move |e| ProvenanceError::Certificate(format!("could not create the {what}: {e}"))
}

fn name(organization: &str, common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn params(
    organization: &str,
    common_name: &str,
    days: i64,
) -> Result<CertificateParams, ProvenanceError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(rcgen_error("certificate parameters"))?;
    params.distinguished_name = name(organization, common_name);
    // A little slack before "now" so that a verifier whose clock is behind still accepts it.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Creates a root, an intermediate and a claim-signing leaf in `dir` (created if needed).
/// Refuses to overwrite existing credentials. Private keys are written readable by the
/// owner only.
pub fn init_ca(dir: &Path, options: &CaOptions) -> Result<KeyFiles, ProvenanceError> {
    let files = KeyFiles::at(dir);
    for existing in [ROOT_CERT, ROOT_KEY, SIGNER_CHAIN, SIGNER_KEY] {
        let path = dir.join(existing);
        if path.exists() {
            return Err(ProvenanceError::Certificate(format!(
                "{} already exists; move the old credentials away first",
                path.display()
            )));
        }
    }
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let org = &options.organization;

    let root_key = KeyPair::generate_for(&PKCS_ED25519).map_err(rcgen_error("root key"))?;
    let mut root_params = params(org, &format!("{org} root CA"), options.root_days)?;
    root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = root_params
        .self_signed(&root_key)
        .map_err(rcgen_error("root certificate"))?;
    let root_issuer = Issuer::new(root_params, &root_key);

    let intermediate_key =
        KeyPair::generate_for(&PKCS_ED25519).map_err(rcgen_error("intermediate key"))?;
    let mut intermediate_params = params(
        org,
        &format!("{org} intermediate CA"),
        options.intermediate_days,
    )?;
    intermediate_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    intermediate_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let intermediate = intermediate_params
        .signed_by(&intermediate_key, &root_issuer)
        .map_err(rcgen_error("intermediate certificate"))?;
    let intermediate_issuer = Issuer::new(intermediate_params, &intermediate_key);

    let signer_key = KeyPair::generate_for(&PKCS_ED25519).map_err(rcgen_error("signing key"))?;
    let mut signer_params = params(org, &options.signer_name, options.signer_days)?;
    signer_params.is_ca = IsCa::ExplicitNoCa;
    signer_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    signer_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(
        C2PA_CLAIM_SIGNING_EKU.to_vec(),
    )];
    let signer = signer_params
        .signed_by(&signer_key, &intermediate_issuer)
        .map_err(rcgen_error("signing certificate"))?;

    write_private(&dir.join(ROOT_KEY), &root_key.serialize_pem())?;
    write_private(
        &dir.join(INTERMEDIATE_KEY),
        &intermediate_key.serialize_pem(),
    )?;
    write_private(&dir.join(SIGNER_KEY), &signer_key.serialize_pem())?;
    write_public(&dir.join(INTERMEDIATE_CERT), &intermediate.pem())?;
    write_public(
        &dir.join(SIGNER_CHAIN),
        &format!("{}{}", signer.pem(), intermediate.pem()),
    )?;
    // The root last: its presence marks the set complete.
    write_public(&dir.join(ROOT_CERT), &root.pem())?;
    Ok(files)
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ProvenanceError + '_ {
    move |source| ProvenanceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes through a temporary file in the same directory, so that a crash never leaves a
/// half-written credential under the final name.
fn write_atomically(path: &Path, contents: &str, private: bool) -> Result<(), ProvenanceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io_error(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if private { 0o600 } else { 0o644 };
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(mode))
            .map_err(io_error(path))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    temp.write_all(contents.as_bytes())
        .map_err(io_error(path))?;
    temp.as_file().sync_all().map_err(io_error(path))?;
    temp.persist(path).map_err(|e| ProvenanceError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

fn write_private(path: &Path, pem: &str) -> Result<(), ProvenanceError> {
    write_atomically(path, pem, true)
}

fn write_public(path: &Path, pem: &str) -> Result<(), ProvenanceError> {
    write_atomically(path, pem, false)
}

/// Development credentials for a machine without configured keys: created on first use in
/// `dir`, and named as development keys in every certificate. Processes starting together
/// agree on one set: each builds a set in a directory of its own and the first to rename it
/// into place wins.
pub fn dev_keys(dir: &Path) -> Result<KeyFiles, ProvenanceError> {
    let files = KeyFiles::at(dir);
    if files.complete() {
        return Ok(files);
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".dev-keys-")
        .tempdir_in(parent)
        .map_err(io_error(parent))?;
    let mut options = CaOptions::new("voxproof development keys (not for distribution)");
    options.signer_name = "voxproof development signer".to_string();
    init_ca(staging.path(), &options)?;
    if dir.exists() && !files.complete() {
        // Left by an older, interrupted run: no complete set is ever removed.
        let _ = fs::remove_dir_all(dir);
    }
    match fs::rename(staging.path(), dir) {
        Ok(()) => {
            // The directory now lives under its final name; nothing is left to clean up.
            let _ = staging.keep();
            Ok(files)
        }
        Err(_) if files.complete() => Ok(files),
        Err(e) => Err(io_error(dir)(e)),
    }
}
