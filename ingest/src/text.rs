//! Text encoders on ONNX Runtime: a BERT-style sentence encoder (inputs `input_ids`,
//! `attention_mask`, `token_type_ids`; output `last_hidden_state` mean-pooled over the
//! mask) or a model that pools itself (an [N, D] output, as a CLIP text tower's
//! `text_embeds`), tokenized with a HF `tokenizer.json`. Implements core's
//! `TextEncoder`, so the server and the ingest bridge use any of them alike.

use crate::embed::unit;
use crate::model::{self, ModelError};
use annostore_core::encode::{EncodeError, TextEncoder};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokenizers::Tokenizer;

/// Longest input when neither the model nor the tokenizer file sets one: BERT's
/// position table.
const DEFAULT_MAX_TOKENS: usize = 512;

/// Pooled outputs, in order of preference, when no output is configured.
const POOLED_OUTPUTS: [&str; 5] = [
    "text_embeds",
    "sentence_embedding",
    "pooled_output",
    "embeddings",
    "embedding",
];

/// How a text encoder is configured; everything but `path` has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextEncoderConfig {
    pub path: PathBuf,
    /// The tokenizer file [default: `tokenizer.json` beside the model].
    pub tokenizer: Option<PathBuf>,
    /// The output holding the vectors [default: a pooled [N, D] output named
    /// `text_embeds`, `sentence_embedding`, ..., else `last_hidden_state`, else the
    /// first float output of rank 2 or 3].
    pub output: Option<String>,
    /// Texts per inference call (a model with a fixed batch of 1 gets one at a time).
    pub batch: usize,
}

impl Default for TextEncoderConfig {
    fn default() -> Self {
        TextEncoderConfig {
            path: PathBuf::new(),
            tokenizer: None,
            output: None,
            batch: 32,
        }
    }
}

impl TextEncoderConfig {
    /// The tokenizer file this configuration uses.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.tokenizer
            .clone()
            .unwrap_or_else(|| self.path.with_file_name("tokenizer.json"))
    }
}

/// What feeds one model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Ids,
    Mask,
    TypeIds,
}

/// A loaded text encoder. `encode` takes `&self`: calls are serialised on the one
/// session (a MiniLM encode takes milliseconds).
pub struct OnnxTextEncoder {
    path: PathBuf,
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    inputs: Vec<(String, Feed)>,
    output: String,
    /// The output is [N, D] already; else [N, seq, D], mean-pooled over the mask.
    pooled: bool,
    dim: usize,
    /// Inputs are cut to this many tokens.
    max_tokens: usize,
    /// A model with a fixed sequence length gets every input padded to it.
    fixed_len: Option<usize>,
    pad_id: i64,
    batch: usize,
}

impl std::fmt::Debug for OnnxTextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxTextEncoder")
            .field("path", &self.path)
            .field("output", &self.output)
            .field("pooled", &self.pooled)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl OnnxTextEncoder {
    /// Opens `model` with its `tokenizer` file [default: `tokenizer.json` beside it] on
    /// ONNX Runtime from `runtime` [default: `ORT_DYLIB_PATH`, then the test venv], with
    /// one intra-op thread: what a server needs to encode queries.
    pub fn open(
        model: &Path,
        tokenizer: Option<&Path>,
        runtime: Option<&Path>,
    ) -> Result<OnnxTextEncoder, ModelError> {
        let config = TextEncoderConfig {
            path: model.to_owned(),
            tokenizer: tokenizer.map(Path::to_owned),
            ..TextEncoderConfig::default()
        };
        OnnxTextEncoder::load(&config, runtime, 1)
    }

    pub fn load(
        config: &TextEncoderConfig,
        runtime: Option<&Path>,
        threads: usize,
    ) -> Result<OnnxTextEncoder, ModelError> {
        let path = config.path.clone();
        let tensors = |reason: String| ModelError::Tensors {
            path: path.clone(),
            reason,
        };
        let env = model::runtime(runtime)?;
        let session = model::session(env, &path, threads)?;

        // Inputs: token ids, and optionally the mask and segment ids, all int64 [N, seq].
        let mut inputs = Vec::new();
        let mut batch_dim = -1;
        let mut seq_dim = -1;
        for input in session.inputs() {
            let feed = match input.name() {
                "input_ids" => Feed::Ids,
                "attention_mask" => Feed::Mask,
                "token_type_ids" => Feed::TypeIds,
                other => {
                    return Err(tensors(format!(
                        "a text encoder takes `input_ids` (and optionally `attention_mask`, \
                         `token_type_ids`); this model takes `{other}` ({})",
                        input.dtype()
                    )));
                }
            };
            match input.dtype() {
                ValueType::Tensor { ty, shape, .. }
                    if *ty == TensorElementType::Int64 && shape.len() == 2 =>
                {
                    batch_dim = shape[0];
                    seq_dim = shape[1];
                }
                other => {
                    return Err(tensors(format!(
                        "input `{}` must be an int64 tensor [N, seq], the model has {other}",
                        input.name()
                    )));
                }
            }
            inputs.push((input.name().to_owned(), feed));
        }
        if !inputs.iter().any(|(_, f)| *f == Feed::Ids) {
            return Err(tensors(
                "a text encoder takes an int64 `input_ids` input; this model has none".into(),
            ));
        }

        // Output: the configured one, else a pooled one, else the hidden states.
        let rank_of = |ty: &ValueType| match ty {
            ValueType::Tensor { ty, shape, .. } if *ty == TensorElementType::Float32 => {
                Some(shape.len())
            }
            _ => None,
        };
        let outputs = session.outputs();
        let names = || outputs.iter().map(|o| o.name()).collect::<Vec<_>>();
        let output = match &config.output {
            Some(name) => outputs.iter().find(|o| o.name() == name).ok_or_else(|| {
                tensors(format!("no output `{name}`; the model has {:?}", names()))
            })?,
            None => POOLED_OUTPUTS
                .iter()
                .find_map(|want| {
                    outputs
                        .iter()
                        .find(|o| o.name() == *want && rank_of(o.dtype()) == Some(2))
                })
                .or_else(|| {
                    outputs
                        .iter()
                        .find(|o| o.name() == "last_hidden_state" && rank_of(o.dtype()) == Some(3))
                })
                .or_else(|| {
                    outputs
                        .iter()
                        .find(|o| matches!(rank_of(o.dtype()), Some(2 | 3)))
                })
                .ok_or_else(|| {
                    tensors(format!(
                        "no output is a text embedding ([N, D] or [N, seq, D] float32); \
                         the model has {:?}",
                        names()
                    ))
                })?,
        };
        let shape = model::float_shape(&path, "output", output.name(), output.dtype())?;
        let (pooled, dim) = match shape.as_slice() {
            [_, d] if *d > 0 => (true, *d as usize),
            [_, _, d] if *d > 0 => (false, *d as usize),
            other => {
                return Err(tensors(format!(
                    "output `{}` has shape {other:?}; a text encoder gives [N, D] or \
                     [N, seq, D] with D fixed",
                    output.name()
                )));
            }
        };
        let output = output.name().to_owned();

        // The tokenizer: no padding (each text at its own length is ~10x faster than
        // the 128 the shared file pads to), truncation at the model's limit.
        let tokenizer_path = config.tokenizer_path();
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| ModelError::Load {
                path: tokenizer_path.clone(),
                reason: format!(
                    "cannot read the tokenizer (a HF tokenizer.json; --tokenizer names \
                     another): {e}"
                ),
            })?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| i64::from(p.pad_id))
            .unwrap_or(0);
        tokenizer.with_padding(None);
        let fixed_len = (seq_dim > 0).then_some(seq_dim as usize);
        let max_tokens = fixed_len
            .or_else(|| tokenizer.get_truncation().map(|t| t.max_length))
            .unwrap_or(DEFAULT_MAX_TOKENS)
            .max(2);
        let truncation = tokenizers::TruncationParams {
            max_length: max_tokens,
            ..tokenizer.get_truncation().cloned().unwrap_or_default()
        };
        tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| ModelError::Load {
                path: tokenizer_path.clone(),
                reason: format!("cannot set truncation: {e}"),
            })?;

        let batch = if batch_dim > 0 {
            batch_dim as usize
        } else {
            config.batch.max(1)
        };
        Ok(OnnxTextEncoder {
            session: Mutex::new(session),
            tokenizer,
            inputs,
            output,
            pooled,
            dim,
            max_tokens,
            fixed_len,
            pad_id,
            batch,
            path,
        })
    }

    /// Inputs longer than this many tokens are cut.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn failed(&self, what: &str, e: &dyn std::fmt::Display) -> EncodeError {
        EncodeError::Encoder(format!("{}: {what}: {e}", self.path.display()))
    }

    /// One model call for up to `self.batch` texts.
    fn run(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
        let mut encodings = Vec::with_capacity(texts.len());
        for text in texts {
            if text.trim().is_empty() {
                return Err(EncodeError::Input("the text is empty".into()));
            }
            encodings.push(
                self.tokenizer
                    .encode(*text, true)
                    .map_err(|e| self.failed("tokenizing", &e.to_string()))?,
            );
        }
        let n = encodings.len();
        let seq = self
            .fixed_len
            .unwrap_or_else(|| encodings.iter().map(|e| e.len()).max().unwrap_or(1))
            .max(1);
        let mut ids = vec![self.pad_id; n * seq];
        let mut mask = vec![0i64; n * seq];
        let mut types = vec![0i64; n * seq];
        for (row, e) in encodings.iter().enumerate() {
            let base = row * seq;
            for (j, ((id, m), t)) in e
                .get_ids()
                .iter()
                .zip(e.get_attention_mask())
                .zip(e.get_type_ids())
                .take(seq)
                .enumerate()
            {
                ids[base + j] = i64::from(*id);
                mask[base + j] = i64::from(*m);
                types[base + j] = i64::from(*t);
            }
        }
        let mut feeds = Vec::with_capacity(self.inputs.len());
        for (name, feed) in &self.inputs {
            let data = match feed {
                Feed::Ids => ids.as_slice(),
                Feed::Mask => mask.as_slice(),
                Feed::TypeIds => types.as_slice(),
            };
            let tensor = TensorRef::from_array_view(([n, seq], data))
                .map_err(|e| self.failed("input", &e))?;
            feeds.push((name.as_str(), tensor));
        }
        let mut session = self
            .session
            .lock()
            .map_err(|_| EncodeError::Encoder("the text encoder's session is poisoned".into()))?;
        let outputs = session
            .run(feeds)
            .map_err(|e| self.failed("inference failed", &e))?;
        let (shape, values) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| self.failed("reading the output", &e))?;
        let wrong = || {
            EncodeError::Encoder(format!(
                "{}: output `{}` came back as {shape:?} for {n} texts of {seq} tokens",
                self.path.display(),
                self.output
            ))
        };
        if self.pooled {
            if shape.len() != 2 || shape[0] as usize != n || shape[1] as usize != self.dim {
                return Err(wrong());
            }
            return Ok(values.chunks_exact(self.dim).map(unit).collect());
        }
        if shape.len() != 3
            || shape[0] as usize != n
            || shape[1] as usize != seq
            || shape[2] as usize != self.dim
        {
            return Err(wrong());
        }
        // Mean over the tokens the mask keeps.
        let mut out = Vec::with_capacity(n);
        for row in 0..n {
            let mut sum = vec![0f32; self.dim];
            let mut kept = 0f32;
            for j in 0..seq {
                if mask[row * seq + j] == 0 {
                    continue;
                }
                let at = (row * seq + j) * self.dim;
                for (s, v) in sum.iter_mut().zip(&values[at..at + self.dim]) {
                    *s += v;
                }
                kept += 1.0;
            }
            if kept > 0.0 {
                sum.iter_mut().for_each(|s| *s /= kept);
            }
            out.push(unit(&sum));
        }
        Ok(out)
    }
}

impl TextEncoder for OnnxTextEncoder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        self.run(&[text])?
            .pop()
            .ok_or_else(|| EncodeError::Encoder("the model gave no vector".into()))
    }

    fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch) {
            out.extend(self.run(chunk)?);
        }
        Ok(out)
    }
}
