//! The bridge from an image classifier to a text space, for search by meaning without
//! a CLIP model: each class name becomes the text vector of "a photo of a <class>", and
//! a crop becomes the unit mix of its top classes' vectors weighted by their softmax
//! probability, plus its detector label's vector. A real CLIP needs none of this (its
//! image tower is the embedder, its text tower the server's encoder).

use crate::detect::Detector;
use crate::embed::{Embedder, unit};
use crate::model::{self, ModelError};
use crate::text::{OnnxTextEncoder, TextEncoderConfig};
use annostore_core::encode::{EncodeError, TextEncoder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The text each class name is put in.
pub fn prompt(class: &str) -> String {
    format!("a photo of a {class}")
}

/// How crops are carried into a text encoder's space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextSpaceConfig {
    pub encoder: TextEncoderConfig,
    /// The embedder's class names, line N = logit N [default: `imagenet_classes.txt`
    /// beside the embedder].
    pub classes: Option<PathBuf>,
    /// The embedder's output of class logits, [N, classes].
    pub logits: String,
    /// Classes mixed into each crop's vector, the most probable first.
    pub top: usize,
    /// Weight of the detector label's vector beside the classes' (whose weights, their
    /// probabilities, add up to at most 1).
    pub label_weight: f32,
}

/// The label weight, measured on the shared slideshow (`ingest/tests/text.rs`): at 0 a
/// "coffee cup" query ranks the still's dining-table crops above its cup and "a person"
/// wins by 0.05 only (ImageNet has no person class); at 1 the classifier's detail fades
/// ("a man in a suit" 0.65 at 0, 0.48 at 1). 0.5 keeps both: every query ranks its
/// still first by 0.25 or more.
pub const DEFAULT_LABEL_WEIGHT: f32 = 0.5;

impl Default for TextSpaceConfig {
    fn default() -> Self {
        TextSpaceConfig {
            encoder: TextEncoderConfig::default(),
            classes: None,
            logits: "logits".into(),
            top: 5,
            label_weight: DEFAULT_LABEL_WEIGHT,
        }
    }
}

/// Class texts in a text space, ready to project crops.
#[derive(Debug)]
pub struct TextSpace {
    dim: usize,
    /// Row N: the vector of the embedder's class N (zero for a nameless id).
    classes: Vec<Vec<f32>>,
    names: Vec<String>,
    /// The detector's labels' vectors.
    labels: HashMap<String, Vec<f32>>,
    top: usize,
    label_weight: f32,
}

impl TextSpace {
    /// Encodes every class and label prompt with `encoder`.
    pub fn build(
        encoder: &dyn TextEncoder,
        classes: &[String],
        labels: &[String],
        top: usize,
        label_weight: f32,
    ) -> Result<TextSpace, EncodeError> {
        let dim = encoder.dim();
        let encode_all = |names: &[String]| -> Result<Vec<Vec<f32>>, EncodeError> {
            let named: Vec<String> = names
                .iter()
                .filter(|n| !n.is_empty())
                .map(|n| prompt(n))
                .collect();
            let refs: Vec<&str> = named.iter().map(String::as_str).collect();
            let mut vectors = encoder.encode_batch(&refs)?.into_iter();
            names
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        Ok(vec![0.0; dim])
                    } else {
                        vectors.next().ok_or_else(|| {
                            EncodeError::Encoder("the encoder gave fewer vectors than texts".into())
                        })
                    }
                })
                .collect()
        };
        let class_vectors = encode_all(classes)?;
        let label_vectors = encode_all(labels)?;
        Ok(TextSpace {
            dim,
            classes: class_vectors,
            names: classes.to_vec(),
            labels: labels
                .iter()
                .cloned()
                .zip(label_vectors)
                .filter(|(l, _)| !l.is_empty())
                .collect(),
            top: top.max(1),
            label_weight: if label_weight.is_finite() {
                label_weight.max(0.0)
            } else {
                0.0
            },
        })
    }

    /// Length of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of classes the logits score.
    pub fn classes(&self) -> usize {
        self.classes.len()
    }

    /// The `top` most probable classes of `logits`: (class id, name, probability).
    pub fn top_classes(&self, logits: &[f32]) -> Vec<(usize, &str, f32)> {
        let probs = softmax(logits);
        let mut ids: Vec<usize> = (0..probs.len()).collect();
        let k = self.top.min(ids.len());
        if k == 0 {
            return Vec::new();
        }
        ids.select_nth_unstable_by(k - 1, |a, b| probs[*b].total_cmp(&probs[*a]));
        ids.truncate(k);
        ids.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
        ids.into_iter()
            .map(|i| (i, self.names.get(i).map_or("", String::as_str), probs[i]))
            .collect()
    }

    /// A crop's vector: the unit mix of its top classes' vectors weighted by their
    /// probability, plus `label_weight` times its label's vector.
    pub fn project(&self, logits: &[f32], label: &str) -> Vec<f32> {
        let mut mix = vec![0f32; self.dim];
        for (i, _, p) in self.top_classes(logits) {
            if let Some(v) = self.classes.get(i) {
                mix.iter_mut().zip(v).for_each(|(m, x)| *m += p * x);
            }
        }
        if let Some(v) = self.labels.get(label) {
            let w = self.label_weight;
            mix.iter_mut().zip(v).for_each(|(m, x)| *m += w * x);
        }
        unit(&mix)
    }
}

/// Numerically stable softmax; non-finite logits count as very unlikely.
fn softmax(logits: &[f32]) -> Vec<f32> {
    let clean: Vec<f32> = logits
        .iter()
        .map(|x| if x.is_finite() { *x } else { f32::MIN })
        .collect();
    let max = clean.iter().copied().fold(f32::MIN, f32::max);
    let exp: Vec<f32> = clean.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    if sum > 0.0 {
        exp.iter().map(|e| e / sum).collect()
    } else {
        vec![0.0; logits.len()]
    }
}

/// Text spaces built in this process, by what they were built from: the class texts
/// are encoded once (1,000 + 80 encodes for ImageNet and COCO), whatever the number of
/// worker threads.
type Built = Vec<(String, Arc<TextSpace>)>;
static BUILT: Mutex<Built> = Mutex::new(Vec::new());

/// The text space of `config` for an embedder at `embedder` and a detector's `labels`:
/// built once per process (the first caller builds, the others wait for it).
pub fn shared(
    config: &TextSpaceConfig,
    embedder: &Path,
    labels: &[String],
    runtime: Option<&Path>,
    threads: usize,
) -> Result<Arc<TextSpace>, ModelError> {
    let classes_path = config
        .classes
        .clone()
        .unwrap_or_else(|| embedder.with_file_name("imagenet_classes.txt"));
    let key = serde_json::json!([config, classes_path, labels]).to_string();
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, space)) = built.iter().find(|(k, _)| *k == key) {
        return Ok(space.clone());
    }
    let classes = model::read_classes(&classes_path)?;
    let encoder = OnnxTextEncoder::load(&config.encoder, runtime, threads)?;
    let space = TextSpace::build(&encoder, &classes, labels, config.top, config.label_weight)
        .map_err(|e| ModelError::Run {
            path: config.encoder.path.clone(),
            reason: format!("encoding the class names: {e}"),
        })?;
    let space = Arc::new(space);
    built.push((key, space.clone()));
    Ok(space)
}

/// Switches `embedder` to the text space of `config`, for `detector`'s labels. Checks
/// the embedder's logits against its class file before encoding anything.
pub fn attach(
    embedder: Embedder,
    detector: &Detector,
    config: &TextSpaceConfig,
    runtime: Option<&Path>,
    threads: usize,
) -> Result<Embedder, ModelError> {
    let width = embedder.output_width(&config.logits).map_err(|e| {
        let reason = format!(
            "{e}; a text encoder reaches crops through the embedder's class logits \
             (an [N, classes] output, `--embedder-logits`)"
        );
        ModelError::Tensors {
            path: embedder.path().to_owned(),
            reason,
        }
    })?;
    let classes_path = config
        .classes
        .clone()
        .unwrap_or_else(|| embedder.path().with_file_name("imagenet_classes.txt"));
    let names = model::read_classes(&classes_path)?.len();
    if names != width {
        return Err(ModelError::Classes {
            path: classes_path,
            reason: format!(
                "names {names} classes but the embedder's `{}` scores {width}",
                config.logits
            ),
        });
    }
    let config = TextSpaceConfig {
        classes: Some(classes_path),
        ..config.clone()
    };
    let space = shared(
        &config,
        embedder.path(),
        detector.classes(),
        runtime,
        threads,
    )?;
    embedder.with_text_space(&config.logits, space)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three orthogonal "texts": a, b, and c.
    struct Axes;
    impl TextEncoder for Axes {
        fn dim(&self) -> usize {
            3
        }
        fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
            Ok(match text.rsplit(' ').next() {
                Some("a") => vec![1.0, 0.0, 0.0],
                Some("b") => vec![0.0, 1.0, 0.0],
                _ => vec![0.0, 0.0, 1.0],
            })
        }
    }

    fn space(top: usize, label_weight: f32) -> TextSpace {
        let names = ["a", "", "b"].map(String::from);
        TextSpace::build(&Axes, &names, &["c".into()], top, label_weight).unwrap()
    }

    #[test]
    fn crops_mix_their_top_classes_by_probability_and_their_label() {
        let s = space(5, 0.0);
        assert_eq!((s.dim(), s.classes()), (3, 3));
        // p(a) = p(b): halfway between; the nameless class adds nothing.
        let v = s.project(&[2.0, 2.0, 2.0], "c");
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((v[0] - h).abs() < 1e-5 && (v[1] - h).abs() < 1e-5 && v[2] == 0.0);
        // Top 1 keeps the most probable class only.
        let v = space(1, 0.0).project(&[0.0, 0.0, 3.0], "c");
        assert!(
            v[0] == 0.0 && (v[1] - 1.0).abs() < 1e-6 && v[2] == 0.0,
            "{v:?}"
        );
        // The label's weight is beside probabilities that add up to 1.
        let v = space(1, 1.0).project(&[0.0, -50.0, 50.0], "c");
        assert!((v[1] - h).abs() < 1e-5 && (v[2] - h).abs() < 1e-5);
        // Unknown label, NaN logits: still a finite unit vector.
        let v = space(5, 1.0).project(&[f32::NAN, 0.0, 1.0], "dog");
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn top_classes_are_sorted_by_probability() {
        let s = space(2, 0.0);
        let top = s.top_classes(&[1.0, 3.0, 2.0]);
        assert_eq!(
            top.iter().map(|(i, n, _)| (*i, *n)).collect::<Vec<_>>(),
            vec![(1, ""), (2, "b")]
        );
        let total: f32 = softmax(&[1.0, 3.0, 2.0]).iter().sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
