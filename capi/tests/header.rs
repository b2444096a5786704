//! The committed C header is what cbindgen makes of the current source, so a
//! changed signature cannot ship with a stale header.

use std::path::Path;

#[test]
fn the_committed_header_is_what_cbindgen_makes_of_the_source() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen parses capi/src")
        .write(&mut generated);
    let path = crate_dir.join("include/gpt_fast.h");
    if std::env::var_os("GPT_FAST_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate it with GPT_FAST_BLESS=1 cargo test -p gpt-fast-capi --test header",
        path.display()
    );
}
