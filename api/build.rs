//! Builds the web viewer (`ui/`, Vite) into `$OUT_DIR/ui`, which `src/ui.rs` embeds.
//!
//! Runs `npm ci` in `ui/` when `node_modules` is missing or older than the lock file, then
//! `npm run build` with `ANNOSTORE_UI_OUT=$OUT_DIR/ui`. With `ANNOSTORE_UI_PREBUILT=<dir>`
//! it skips npm and embeds that directory (a page built elsewhere). Without npm, or when
//! the page does not build, the build fails and says what to do.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: building the web viewer (ui/) failed:\n{message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let ui = manifest
        .parent()
        .ok_or("the api crate has no parent directory")?
        .join("ui");
    let out = PathBuf::from(env("OUT_DIR")?).join("ui");
    println!("cargo:rerun-if-env-changed=ANNOSTORE_UI_PREBUILT");
    println!("cargo:rerun-if-changed=build.rs");

    if let Some(prebuilt) = std::env::var_os("ANNOSTORE_UI_PREBUILT").filter(|v| !v.is_empty()) {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        if !prebuilt.join("index.html").is_file() {
            return Err(format!(
                "ANNOSTORE_UI_PREBUILT={} holds no index.html: name a directory holding a \
                 built page (`npm run build` in ui/ makes ui/dist), or unset it to build ui/",
                prebuilt.display()
            ));
        }
        let _ = std::fs::remove_dir_all(&out);
        copy_dir(&prebuilt, &out)
            .map_err(|e| format!("copying {} to {}: {e}", prebuilt.display(), out.display()))?;
        return Ok(());
    }

    for input in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", ui.join(input).display());
    }

    // Cargo may run this script for two profiles at once (clippy and a build in
    // parallel): one npm at a time in ui/, since both write node_modules.
    let lock = std::fs::File::create(ui.join(".build.lock"))
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|e| format!("locking {}: {e}", ui.join(".build.lock").display()))?;
    if needs_install(&ui) {
        npm(&ui, &["ci", "--no-audit", "--no-fund"], &out)?;
    }
    npm(&ui, &["run", "build"], &out)?;
    drop(lock);
    if !out.join("index.html").is_file() {
        return Err(format!(
            "`npm run build` wrote no index.html into {}",
            out.display()
        ));
    }
    Ok(())
}

/// What to do when npm cannot build the page.
const NPM_HINT: &str = "Install Node.js 20+ with npm (Debian: `apt-get install nodejs npm`), \
     or set ANNOSTORE_UI_PREBUILT to a directory holding a built page (`npm run build` in \
     ui/ makes ui/dist).";

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

/// `npm ci` is needed when `node_modules` was never installed from the lock file, or
/// was installed from an older one.
fn needs_install(ui: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(&ui.join("node_modules/.package-lock.json")),
        modified(&ui.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    }
}

/// Runs `npm ARGS` in `ui`, with `ANNOSTORE_UI_OUT` pointing Vite at `out`. Its output is
/// shown only when it fails (cargo shows a build script's stderr then).
fn npm(ui: &Path, args: &[&str], out: &Path) -> Result<(), String> {
    let shown = format!("npm {}", args.join(" "));
    let output: Output = Command::new("npm")
        .args(args)
        .current_dir(ui)
        .env("ANNOSTORE_UI_OUT", out)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("npm is not installed (not found on PATH).\n{NPM_HINT}")
            }
            _ => format!("cannot run `{shown}`: {e}\n{NPM_HINT}"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{shown}` in {} failed ({}):\n{}{}\n{NPM_HINT}",
        ui.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
