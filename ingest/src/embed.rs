//! Crop embeddings with any ONNX image model: each detection's box is cut from the
//! frame, resized (fast_image_resize), normalised, batched, and the chosen output's
//! vector L2-normalised so that cosine and dot product agree. With a text space
//! attached (`with_text_space`), the vector is instead the crop's class logits carried
//! into a text encoder's space (`textspace`).

use crate::detect::Detection;
use crate::media::RgbImage;
use crate::model::{self, ModelError};
use crate::textspace::TextSpace;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions, Resizer};
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How an embedder is configured; everything but `path` has a default (ImageNet
/// normalisation at 224 x 224, output `embedding`, else the first output).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    pub path: PathBuf,
    /// Crop size fed to the model when its input is dynamic.
    pub input_size: u32,
    /// Per-channel (R, G, B) mean and standard deviation applied to pixels in 0..1.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The output holding the vector [default: `embedding` when the model has one,
    /// else its first output].
    pub output: Option<String>,
    /// Crops per inference call (a model with a fixed batch of 1 gets one at a time).
    pub batch: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            path: PathBuf::new(),
            input_size: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            output: None,
            batch: 16,
        }
    }
}

/// A loaded embedder. Not shared between threads.
pub struct Embedder {
    path: PathBuf,
    session: Session,
    input_name: String,
    /// The output read: the embedding, or the class logits when `text` is set.
    output_name: String,
    /// Width of that output.
    output_dim: usize,
    size: u32,
    batch: usize,
    /// Length of the vectors given.
    dim: usize,
    text: Option<Arc<TextSpace>>,
    config: EmbedderConfig,
    resizer: Resizer,
    crop: Image<'static>,
    input: Vec<f32>,
}

impl Embedder {
    pub fn load(
        config: &EmbedderConfig,
        runtime: Option<&Path>,
        threads: usize,
    ) -> Result<Embedder, ModelError> {
        let path = config.path.clone();
        let (session, input_name, shape) =
            model::image_model(&path, runtime, threads, "an embedder")?;
        let tensors = |reason: String| ModelError::Tensors {
            path: path.clone(),
            reason,
        };
        let (batch_dim, h, w) = match shape.as_slice() {
            [n, 3, h, w] => (*n, *h, *w),
            other => {
                return Err(tensors(format!(
                    "input `{input_name}` has shape {other:?}; an embedder takes [N, 3, H, W]"
                )));
            }
        };
        if h > 0 && w > 0 && h != w {
            return Err(tensors(format!(
                "input `{input_name}` is {w}x{h}; only square inputs are supported"
            )));
        }
        let size = if h > 0 { h as u32 } else { config.input_size };
        let output = match &config.output {
            Some(name) => session.outputs().iter().find(|o| o.name() == name),
            None => session
                .outputs()
                .iter()
                .find(|o| o.name() == "embedding")
                .or_else(|| session.outputs().first()),
        }
        .ok_or_else(|| {
            tensors(format!(
                "no output {}; the model has {:?}",
                config.output.as_deref().unwrap_or("at all"),
                session
                    .outputs()
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
            ))
        })?;
        let out_shape = model::float_shape(&path, "output", output.name(), output.dtype())?;
        let dim = match out_shape.as_slice() {
            [_, d] if *d > 0 => *d as usize,
            other => {
                return Err(tensors(format!(
                    "output `{}` has shape {other:?}; an embedding output is [N, D]",
                    output.name()
                )));
            }
        };
        let batch = if batch_dim > 0 {
            batch_dim as usize
        } else {
            config.batch.max(1)
        };
        Ok(Embedder {
            input_name,
            output_name: output.name().to_owned(),
            output_dim: dim,
            size,
            batch,
            dim,
            text: None,
            config: config.clone(),
            resizer: Resizer::new(),
            crop: Image::new(size, size, PixelType::U8x3),
            input: Vec::new(),
            session,
            path,
        })
    }

    /// Length of the vectors this embedder gives (the text space's with one attached).
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the vectors live in a text space (`with_text_space`).
    pub fn text_space(&self) -> Option<&Arc<TextSpace>> {
        self.text.as_ref()
    }

    /// The width D of the model's [N, D] output `name`, or why it has none.
    pub fn output_width(&self, name: &str) -> Result<usize, ModelError> {
        let tensors = |reason: String| ModelError::Tensors {
            path: self.path.clone(),
            reason,
        };
        let output = self
            .session
            .outputs()
            .iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| {
                tensors(format!(
                    "no output `{name}`; the model has {:?}",
                    self.session
                        .outputs()
                        .iter()
                        .map(|o| o.name())
                        .collect::<Vec<_>>()
                ))
            })?;
        match model::float_shape(&self.path, "output", name, output.dtype())?.as_slice() {
            [_, d] if *d > 0 => Ok(*d as usize),
            other => Err(tensors(format!(
                "output `{name}` has shape {other:?}; expected [N, D]"
            ))),
        }
    }

    /// From now on each crop's vector is `space.project` of the model's output `logits`
    /// (class logits, one per class of the space) and the detection's label.
    pub fn with_text_space(
        mut self,
        logits: &str,
        space: Arc<TextSpace>,
    ) -> Result<Embedder, ModelError> {
        let width = self.output_width(logits)?;
        if width != space.classes() {
            return Err(ModelError::Tensors {
                path: self.path.clone(),
                reason: format!(
                    "output `{logits}` scores {width} classes but the text space has {}",
                    space.classes()
                ),
            });
        }
        self.output_name = logits.to_owned();
        self.output_dim = width;
        self.dim = space.dim();
        self.text = Some(space);
        Ok(self)
    }

    /// One unit vector per detection, in order.
    pub fn embed(
        &mut self,
        frame: &RgbImage,
        detections: &[Detection],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut out = Vec::with_capacity(detections.len());
        for chunk in detections.chunks(self.batch) {
            self.fill_input(frame, chunk)?;
            let rows = self.run(chunk.len())?;
            match &self.text {
                None => out.extend(rows.iter().map(|r| unit(r))),
                Some(space) => out.extend(
                    rows.iter()
                        .zip(chunk)
                        .map(|(r, d)| space.project(r, &d.label)),
                ),
            }
        }
        Ok(out)
    }

    /// Crops, resizes and normalises `chunk` into the NCHW input buffer.
    fn fill_input(&mut self, frame: &RgbImage, chunk: &[Detection]) -> Result<(), ModelError> {
        let plane = (self.size * self.size) as usize;
        self.input.clear();
        self.input.resize(chunk.len() * 3 * plane, 0.0);
        let src = ImageRef::new(frame.width, frame.height, &frame.data, PixelType::U8x3)
            .map_err(|e| self.run_error(&e))?;
        let (fw, fh) = (f64::from(frame.width), f64::from(frame.height));
        for (i, d) in chunk.iter().enumerate() {
            // At least one pixel, inside the frame.
            let left = (f64::from(d.x) * fw).clamp(0.0, fw - 1.0);
            let top = (f64::from(d.y) * fh).clamp(0.0, fh - 1.0);
            let width = (f64::from(d.w) * fw).clamp(1.0, fw - left);
            let height = (f64::from(d.h) * fh).clamp(1.0, fh - top);
            let options = ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(
                    fast_image_resize::FilterType::Bilinear,
                ))
                .crop(left, top, width, height);
            self.resizer
                .resize(&src, &mut self.crop, &options)
                .map_err(|e| self.run_error(&e))?;
            let base = i * 3 * plane;
            for (p, px) in self.crop.buffer().chunks_exact(3).enumerate() {
                for (c, v) in px.iter().enumerate() {
                    self.input[base + c * plane + p] =
                        (f32::from(*v) / 255.0 - self.config.mean[c]) / self.config.std[c];
                }
            }
        }
        Ok(())
    }

    /// The output's raw rows for the `n` crops in the input buffer.
    fn run(&mut self, n: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        let s = self.size as usize;
        let tensor = TensorRef::from_array_view(([n, 3, s, s], self.input.as_slice()))
            .map_err(|e| self.run_error(&e))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| ModelError::Run {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        let (shape, values) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| ModelError::Run {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        if shape.len() != 2 || shape[0] as usize != n || shape[1] as usize != self.output_dim {
            return Err(ModelError::Tensors {
                path: self.path.clone(),
                reason: format!(
                    "output `{}` came back as {shape:?}, expected [{n}, {}]",
                    self.output_name, self.output_dim
                ),
            });
        }
        Ok(values
            .chunks_exact(self.output_dim)
            .map(<[f32]>::to_vec)
            .collect())
    }

    fn run_error(&self, e: &dyn std::fmt::Display) -> ModelError {
        ModelError::Run {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }
}

/// `v / |v|` (a zero vector stays zero). Non-finite values become 0 so that the API
/// never sees NaN.
pub fn unit(v: &[f32]) -> Vec<f32> {
    let clean = |x: f32| if x.is_finite() { x } else { 0.0 };
    let norm = v.iter().map(|x| clean(*x) * clean(*x)).sum::<f32>().sqrt();
    v.iter()
        .map(|x| if norm > 0.0 { clean(*x) / norm } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_vectors_have_length_one_and_no_nan() {
        let u = super::unit(&[3.0, 4.0, f32::NAN]);
        assert_eq!(u, vec![0.6, 0.8, 0.0]);
        assert_eq!(super::unit(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
