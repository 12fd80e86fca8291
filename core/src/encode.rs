//! Text to vector, the seam for searching embeddings by meaning: a `TextEncoder` maps a
//! query into the space a type's embeddings live in (a CLIP text tower for CLIP image
//! embeddings, a sentence encoder for the ingest workers' class-text bridge). Engines
//! implement it elsewhere (`annostore-ingest` has the ONNX one); core holds no model code.

/// Why a text could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The text itself is unusable (the caller's fault: answer 400).
    #[error("cannot encode this text: {0}")]
    Input(String),
    /// The encoder failed (tokenizer or model: answer 500/503).
    #[error("text encoder failed: {0}")]
    Encoder(String),
}

/// Maps text into an embedding space. Shared between threads (`Arc<dyn TextEncoder>`).
pub trait TextEncoder: Send + Sync {
    /// Length of the vectors `encode` gives.
    fn dim(&self) -> usize;

    /// The text's vector, of length `dim()`, L2-normalised (cosine and dot product
    /// agree).
    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError>;

    /// Several texts at once, in order; encoders that batch do it faster. Each vector
    /// is what `encode` gives up to rounding.
    fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
        texts.iter().map(|t| self.encode(t)).collect()
    }
}
