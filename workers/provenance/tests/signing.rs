//! Sign real audio files in every container and read them back with the root as the trust
//! anchor; tamper with them; refuse unfit certificates with a message that says why.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use voxproof_provenance::{
    init_ca, read_manifest, sidecar_path, sign_file, CaOptions, Ed25519Signer, KeyFiles,
    ManifestState, ProvenanceRecord,
};
use voxproof_watermark::Payload;

fn record() -> ProvenanceRecord {
    ProvenanceRecord {
        record_id: 0x1234_5678,
        watermark: Payload::for_record(b"test key", 0x1234_5678),
        job_id: Some("0190f7c4-1111-7000-8000-000000000001".into()),
        tenant: Some("t-9f2c".into()),
        voice: "en_US-joe-medium".into(),
        voice_model_sha256: "ab".repeat(32),
        input_sha256: "cd".repeat(32),
        created_at: "2026-11-27T03:00:00Z".into(),
    }
}

/// Two seconds of a gliding tone with some noise-like texture, 22.05 kHz mono.
fn write_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for n in 0..44_100u32 {
        let t = f64::from(n) / 22_050.0;
        let v = (t * (300.0 + 200.0 * t) * std::f64::consts::TAU).sin() * 0.3
            + ((n * 7919 % 613) as f64 / 613.0 - 0.5) * 0.02;
        writer.write_sample((v * 32767.0) as i16).unwrap();
    }
    writer.finalize().unwrap();
}

fn ffmpeg(input: &Path, output: &Path, args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(input)
        .args(args)
        .arg(output)
        .status()
        .expect("ffmpeg runs (scripts/setup installs it)");
    assert!(status.success(), "ffmpeg failed for {}", output.display());
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    keys: KeyFiles,
    anchor: String,
    signer: Ed25519Signer,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let keys = init_ca(&path.join("keys"), &CaOptions::new("voxproof test")).unwrap();
    let signer = Ed25519Signer::load(&keys.signer_chain(), &keys.signer_key()).unwrap();
    let anchor = std::fs::read_to_string(keys.root_cert()).unwrap();
    Fixture {
        _dir: dir,
        dir: path,
        keys,
        anchor,
        signer,
    }
}

#[test]
fn every_container_is_signed_and_reads_back_trusted() {
    let f = fixture();
    let wav = f.dir.join("clip.wav");
    write_wav(&wav);
    let mut files = vec![wav.clone()];
    for (name, args) in [
        ("clip.mp3", &["-c:a", "libmp3lame", "-b:a", "64k"][..]),
        ("clip.flac", &[][..]),
        ("clip.m4b", &["-c:a", "aac", "-b:a", "64k"][..]),
        ("clip.opus", &["-c:a", "libopus", "-b:a", "32k"][..]),
    ] {
        let out = f.dir.join(name);
        ffmpeg(&wav, &out, args);
        files.push(out);
    }
    for file in &files {
        let before = std::fs::metadata(file).unwrap().len();
        sign_file(&f.signer, file, &record()).unwrap();
        let report = read_manifest(file, &f.anchor).unwrap();
        assert_eq!(
            report.state,
            ManifestState::Trusted,
            "{}: {:?}",
            file.display(),
            report.errors
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.record, Some(record()), "{}", file.display());
        assert_eq!(report.soft_binding, Some(record().watermark));
        assert!(report.signer.is_some());
        let manifest = report.manifest.expect("manifest json");
        let text = manifest.to_string();
        assert!(text.contains("trainedAlgorithmicMedia"), "{text}");
        assert!(text.contains("c2pa.watermarked"), "{text}");
        if file.extension().unwrap() == "opus" {
            assert!(sidecar_path(file).is_file());
            assert_eq!(std::fs::metadata(file).unwrap().len(), before);
        } else {
            assert!(std::fs::metadata(file).unwrap().len() > before);
        }
        // Without our root the signature still checks, but nothing vouches for the signer.
        let untrusted = read_manifest(file, "").unwrap();
        assert_eq!(untrusted.state, ManifestState::Valid, "{}", file.display());
    }
    // Other decoders still read the signed files.
    for file in &files {
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(file)
            .args(["-f", "null", "-"])
            .status()
            .unwrap();
        assert!(status.success(), "ffmpeg cannot decode {}", file.display());
    }
}

#[test]
fn a_changed_sample_is_a_hash_mismatch_and_a_stripped_file_has_no_manifest() {
    let f = fixture();
    let wav = f.dir.join("clip.wav");
    write_wav(&wav);
    sign_file(&f.signer, &wav, &record()).unwrap();

    // Flip one sample in the middle of the data chunk.
    let mut bytes = std::fs::read(&wav).unwrap();
    let data = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
    bytes[data + 40_000] ^= 0x40;
    let altered = f.dir.join("altered.wav");
    std::fs::write(&altered, &bytes).unwrap();
    let report = read_manifest(&altered, &f.anchor).unwrap();
    assert_eq!(report.state, ManifestState::Invalid);
    assert!(report.hash_mismatch, "{:?}", report.errors);
    assert!(
        report.errors.iter().any(|e| e.contains("mismatch")),
        "{:?}",
        report.errors
    );
    // The manifest still names the record, so the verdict can say what it claimed.
    assert_eq!(report.record, Some(record()));

    // The same for an Opus file, whose manifest is a sidecar over the whole file's bytes.
    let opus = f.dir.join("clip.opus");
    ffmpeg(&wav, &opus, &["-c:a", "libopus", "-b:a", "32k"]);
    sign_file(&f.signer, &opus, &record()).unwrap();
    let mut bytes = std::fs::read(&opus).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&opus, &bytes).unwrap();
    let report = read_manifest(&opus, &f.anchor).unwrap();
    assert_eq!(report.state, ManifestState::Invalid, "{:?}", report.errors);
    assert!(report.hash_mismatch, "{:?}", report.errors);

    let stripped = f.dir.join("stripped.wav");
    ffmpeg(&wav, &stripped, &["-c", "copy"]);
    let report = read_manifest(&stripped, &f.anchor).unwrap();
    assert_eq!(report.state, ManifestState::Absent, "{:?}", report.errors);
    assert!(report.manifest.is_none());
}

/// Writes a chain whose leaf is made by `leaf`, issued by a fresh intermediate.
fn chain_with_leaf(dir: &Path, leaf: impl FnOnce(&mut CertificateParams)) -> (PathBuf, PathBuf) {
    let dn = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn
    };
    let ca_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = dn("test intermediate");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);

    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = dn("test signer");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![
        1, 3, 6, 1, 4, 1, 62558, 2, 1,
    ])];
    leaf(&mut params);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain = dir.join("chain.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&chain, format!("{}{}", cert.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (chain, key_path)
}

fn load_error(leaf: impl FnOnce(&mut CertificateParams)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (chain, key) = chain_with_leaf(dir.path(), leaf);
    Ed25519Signer::load(&chain, &key)
        .expect_err("the certificate must be refused")
        .to_string()
}

#[test]
fn unfit_certificates_are_refused_with_the_reason() {
    // The unmodified helper chain is accepted: the refusals below are each one change.
    let dir = tempfile::tempdir().unwrap();
    let (chain, key) = chain_with_leaf(dir.path(), |_| {});
    Ed25519Signer::load(&chain, &key).unwrap();

    let expired = load_error(|p| {
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    });
    assert!(expired.contains("expired on"), "{expired}");

    let no_eku = load_error(|p| p.extended_key_usages.clear());
    assert!(no_eku.contains("extended key usage"), "{no_eku}");
    assert!(no_eku.contains("1.3.6.1.4.1.62558.2.1"), "{no_eku}");

    let server_eku = load_error(|p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    assert!(server_eku.contains("extended key usage"), "{server_eku}");

    let no_digital_signature = load_error(|p| p.key_usages = vec![KeyUsagePurpose::KeyAgreement]);
    assert!(
        no_digital_signature.contains("digitalSignature"),
        "{no_digital_signature}"
    );

    let no_aki = load_error(|p| p.use_authority_key_identifier_extension = false);
    assert!(no_aki.contains("authority key identifier"), "{no_aki}");

    // A key that belongs to another certificate.
    let other = fixture();
    let mismatch = Ed25519Signer::load(&chain, &other.keys.signer_key())
        .unwrap_err()
        .to_string();
    assert!(mismatch.contains("does not belong"), "{mismatch}");
}

#[test]
fn init_ca_never_overwrites_credentials() {
    let f = fixture();
    let again = init_ca(&f.keys.dir, &CaOptions::new("voxproof test")).unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    let loaded = Ed25519Signer::load(&f.keys.signer_chain(), &f.keys.signer_key()).unwrap();
    assert_eq!(loaded.subject(), f.signer.subject());
}
