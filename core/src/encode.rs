//! The text side of text-to-image search: a model that puts a query string in the space
//! of the image embeddings (a CLIP text tower, or the MiniLM bridge of the ingest crate).

/// Why a text could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("text encoder: {0}")]
    Failed(String),
}

/// Turns a query string into a vector in the image embeddings' space.
pub trait TextEncoder: Send + Sync + 'static {
    /// The dimension of the vectors it makes.
    fn dim(&self) -> usize;
    /// The text's vector, L2-normalised.
    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError>;
}
