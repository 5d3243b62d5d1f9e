//! Helpers shared by the CLI tests.

use std::path::{Path, PathBuf};

/// `../shared/fixtures` next to the repository, or `/work/shared/fixtures` where the checkout
/// lives elsewhere.
pub fn shared_fixtures() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("/work/shared/fixtures")
    }
}
