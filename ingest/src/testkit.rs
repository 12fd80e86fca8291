//! Where tests find their data (feature `testkit`): the shared media and models of the
//! workplace (`../shared/`, see its README) and the models `scripts/setup-models`
//! fetches. Missing data fails the test with what to do: these tests never skip.

use std::path::{Path, PathBuf};

/// `rel` inside the shared folder: `ANNOSTORE_SHARED`, else a `shared/` folder beside
/// the workspace or any folder above it, else `/work/shared`.
pub fn shared(rel: &str) -> PathBuf {
    let root = std::env::var_os("ANNOSTORE_SHARED")
        .map(PathBuf::from)
        .or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|a| a.join("shared"))
                .find(|s| s.join("models/centernet.onnx").is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/work/shared"));
    let path = root.join(rel);
    assert!(
        path.exists(),
        "{} is missing: the tests need the shared media and models (set ANNOSTORE_SHARED \
         to the folder holding media/ and models/)",
        path.display()
    );
    path
}

/// `rel` inside the folder `scripts/setup-models` fills (`ANNOSTORE_MODELS`, else
/// `/var/tmp/annostore-models`).
pub fn fetched_model(rel: &str) -> PathBuf {
    let path = std::env::var_os("ANNOSTORE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/annostore-models"))
        .join(rel);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup-models",
        path.display()
    );
    path
}
