// espeak-rs-sys links espeak-ng 1.52 statically; that build uses the system's libsonic
// (Debian's libsonic-dev, installed by scripts/setup) for rate changes, so link it here.
fn main() {
    println!("cargo:rustc-link-lib=static=sonic");
    println!("cargo:rustc-link-search=native=/usr/lib/x86_64-linux-gnu");
}
