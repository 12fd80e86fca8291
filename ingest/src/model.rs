//! ONNX Runtime, loaded at run time (ort's `load-dynamic`): where the library is found,
//! the one environment of the process, and sessions tuned for small CPUs.

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::ValueType;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A model that cannot be used, named with its file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime not found: set ORT_DYLIB_PATH (or --onnxruntime) to libonnxruntime.so \
         (for example from the PyPI wheel onnxruntime==1.31.1: \
         site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1)"
    )]
    RuntimeMissing,
    #[error("loading ONNX Runtime from {path}: {reason}")]
    Runtime { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Load { path: PathBuf, reason: String },
    /// The model's tensors are not what the configuration or the decoder expects.
    #[error("{path}: {reason}")]
    Tensors { path: PathBuf, reason: String },
    #[error("{path}: inference failed: {reason}")]
    Run { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Classes { path: PathBuf, reason: String },
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Where to load ONNX Runtime from: the explicit path, then `ORT_DYLIB_PATH`, then the
/// test suite's venv (`scripts/setup-python` installs the wheel there).
pub fn find_runtime(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    let venv = std::env::var_os("ANNOSTORE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/annostore-venv"));
    let lib = venv.join("lib");
    let entries = std::fs::read_dir(&lib).ok()?;
    for entry in entries.flatten() {
        let capi = entry
            .path()
            .join("site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
        if capi.is_file() {
            return Some(capi);
        }
    }
    None
}

/// Loads ONNX Runtime once per process. Later calls return the first outcome.
pub fn runtime(explicit: Option<&Path>) -> Result<&'static Environment, ModelError> {
    let outcome = ENVIRONMENT.get_or_init(|| {
        let Some(path) = find_runtime(explicit) else {
            return Err(String::new());
        };
        if !path.is_file() {
            return Err(format!("{}: no such file", path.display()));
        }
        ort::init_from(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .with_name("annostore-ingest")
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))
    });
    match outcome {
        Ok(env) => Ok(env),
        Err(reason) if reason.is_empty() => Err(ModelError::RuntimeMissing),
        Err(reason) => Err(ModelError::Runtime {
            path: find_runtime(explicit).unwrap_or_default(),
            reason: reason.clone(),
        }),
    }
}

/// A session with `threads` intra-op threads and spinning off: on 2 cores a spinning
/// thread pool starves the decoder.
pub fn session(env: &Environment, path: &Path, threads: usize) -> Result<Session, ModelError> {
    let load = |e: &dyn std::fmt::Display| ModelError::Load {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if !path.is_file() {
        return Err(load(&"no such model file"));
    }
    Session::builder(env)
        .map_err(|e| load(&e))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| load(&e))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| load(&e))?
        .with_inter_threads(1)
        .map_err(|e| load(&e))?
        .with_intra_op_spinning(false)
        .map_err(|e| load(&e))?
        .with_inter_op_spinning(false)
        .map_err(|e| load(&e))?
        .commit_from_file(path)
        .map_err(|e| load(&e))
}

/// Loads an image model: its session, the name of its one input, and that input's
/// shape (`role` names the model in errors: "a detector", "an embedder").
pub fn image_model(
    path: &Path,
    runtime_path: Option<&Path>,
    threads: usize,
    role: &str,
) -> Result<(Session, String, Vec<i64>), ModelError> {
    let env = runtime(runtime_path)?;
    let session = session(env, path, threads)?;
    let [input] = session.inputs() else {
        return Err(ModelError::Tensors {
            path: path.to_owned(),
            reason: format!(
                "{role} takes one image input, this model takes {}",
                session.inputs().len()
            ),
        });
    };
    let shape = float_shape(path, "input", input.name(), input.dtype())?;
    let name = input.name().to_owned();
    Ok((session, name, shape))
}

/// The shape of a float tensor outlet (-1 for a dynamic dimension), or why it is not one.
pub fn float_shape(
    path: &Path,
    what: &str,
    name: &str,
    ty: &ValueType,
) -> Result<Vec<i64>, ModelError> {
    match ty {
        ValueType::Tensor { ty, shape, .. } if *ty == ort::value::TensorElementType::Float32 => {
            Ok(shape.iter().copied().collect())
        }
        other => Err(ModelError::Tensors {
            path: path.to_owned(),
            reason: format!("{what} `{name}` must be a float32 tensor, the model has {other}"),
        }),
    }
}

/// Reads class names, one per line (line N is class id N); blank lines are kept as
/// nameless ids so that numbering never shifts.
pub fn read_classes(path: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Classes {
        path: path.to_owned(),
        reason: format!("cannot read class names: {e}"),
    })?;
    let classes: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
    let trimmed = classes.len() - classes.iter().rev().take_while(|c| c.is_empty()).count();
    if trimmed == 0 {
        return Err(ModelError::Classes {
            path: path.to_owned(),
            reason: "no class names in the file".into(),
        });
    }
    Ok(classes[..trimmed].to_vec())
}
