//! annostore's ingest workers: decode a video (FFmpeg), detect objects and embed their
//! crops (ONNX Runtime), and write each run through annostore's operation API.
//!
//! - `media`: probing and sampling videos.
//! - `model`, `detect`, `embed`: ONNX Runtime, the detector decoders, crop embeddings.
//! - `text`, `textspace`: ONNX text encoders (core's `TextEncoder`), and the bridge
//!   that carries crops into a text encoder's space through their class logits.
//! - `segment`: one time range of one video, end to end, with deterministic ids.
//! - `api`: the producer's HTTP client.
//! - `run`: whole videos on this machine (`annostore ingest`).
//! - `kafka`: segments over Kafka (`annostore submit`, `annostore worker`).

pub mod api;
pub mod detect;
pub mod embed;
pub mod kafka;
pub mod media;
pub mod model;
pub mod run;
pub mod segment;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod text;
pub mod textspace;
