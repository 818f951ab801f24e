//! Swagger UI's files are embedded from `swagger-ui/node_modules` (src/openapi.rs), which
//! `scripts/setup` fills with `npm ci`. This checks that they are there, at the version that
//! swagger-ui/package.json pins, and hands that version to the crate: asset URLs carry it.

use std::path::Path;

fn main() {
    // Read when the script runs, not when it is compiled: a build script binary can be reused
    // by another checkout that shares the target directory.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir).join("swagger-ui");
    let pinned_file = root.join("package.json");
    let installed_file = root.join("node_modules/swagger-ui-dist/package.json");
    println!("cargo::rerun-if-changed={}", pinned_file.display());
    println!("cargo::rerun-if-changed={}", installed_file.display());

    let Some(pinned) = std::fs::read_to_string(&pinned_file)
        .ok()
        .and_then(|text| string_field(&text, "swagger-ui-dist"))
    else {
        return fail(&format!(
            "{} pins no swagger-ui-dist version",
            pinned_file.display()
        ));
    };
    let installed = std::fs::read_to_string(&installed_file)
        .ok()
        .and_then(|text| string_field(&text, "version"));
    match installed {
        Some(version) if version == pinned => {
            println!("cargo::rustc-env=SWAGGER_UI_VERSION={pinned}")
        }
        Some(version) => fail(&format!(
            "api/swagger-ui/node_modules has swagger-ui-dist {version}, package.json pins \
             {pinned}: run scripts/setup"
        )),
        None => fail(&format!(
            "Swagger UI's files are missing ({} not found): run scripts/setup \
             (it runs `npm ci` in api/swagger-ui)",
            installed_file.display()
        )),
    }
}

/// Fails the build with `message` as cargo's error, without a panic's noise.
fn fail(message: &str) {
    println!("cargo::error={message}");
}

/// The string value of the first `"key": "value"` in a JSON text; enough for the two
/// package.json files above, whose first such key is the one wanted.
fn string_field(json: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let after_key = &json[json.find(&quoted)? + quoted.len()..];
    let value = after_key
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(value[..value.find('"')?].to_string())
}
