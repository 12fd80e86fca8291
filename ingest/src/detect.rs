//! Object detection with any ONNX detector whose output is one of two common layouts:
//!
//! - **CenterNet style** `[1, N, 6]`: x1, y1, x2, y2 (input pixels), score, class id
//!   (the shared MobileNetV3-CenterNet); near-duplicates are suppressed here too.
//! - **YOLOv8 style** `[1, 4 + C, anchors]`: cx, cy, w, h (input pixels) then one score
//!   per class; decoded here with per-class non-maximum suppression (what
//!   `yolo export format=onnx` gives).
//!
//! The input layout is read off the model: `[1, H, W, 3]` is fed RGB 0..255 (NHWC),
//! `[1, 3, H, W]` RGB 0..1 (NCHW), both overridable. Frames are stretched to the input
//! size (no letterbox).

use crate::media::RgbImage;
use crate::model::{self, ModelError};
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a detector is configured; everything but `path` has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    pub path: PathBuf,
    /// Class names, line N = class id N [default: coco_classes.txt beside the model].
    pub classes: Option<PathBuf>,
    /// Detections scoring below this are dropped.
    pub score_threshold: f32,
    /// YOLOv8: boxes of one class overlapping more than this are suppressed.
    pub iou_threshold: f32,
    /// At most this many detections per frame, best first.
    pub max_detections: usize,
    /// The output to decode [default: the first whose shape fits a known layout].
    pub output: Option<String>,
    /// Input size when the model leaves it dynamic.
    pub input_size: u32,
    /// Multiply 0..255 pixels by this [default: 1 for NHWC models, 1/255 for NCHW].
    pub pixel_scale: Option<f32>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            path: PathBuf::new(),
            classes: None,
            score_threshold: 0.3,
            iou_threshold: 0.45,
            max_detections: 100,
            output: None,
            input_size: 640,
            pixel_scale: None,
        }
    }
}

/// One detected object, its box normalised to the frame (0..1, top-left origin).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub class_id: usize,
    pub label: String,
    pub score: f32,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// The two output layouts this decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    CenterNet,
    Yolov8,
}

/// A loaded detector. Not shared between threads: each worker thread loads its own.
pub struct Detector {
    path: PathBuf,
    session: Session,
    input_name: String,
    output_name: String,
    nhwc: bool,
    width: u32,
    height: u32,
    scale: f32,
    classes: Vec<String>,
    config: DetectorConfig,
    input: Vec<f32>,
}

impl Detector {
    pub fn load(
        config: &DetectorConfig,
        runtime: Option<&Path>,
        threads: usize,
    ) -> Result<Detector, ModelError> {
        let path = config.path.clone();
        let classes_path = config
            .classes
            .clone()
            .unwrap_or_else(|| path.with_file_name("coco_classes.txt"));
        let classes = model::read_classes(&classes_path)?;
        let (session, input_name, shape) =
            model::image_model(&path, runtime, threads, "a detector")?;
        let tensors = |reason: String| ModelError::Tensors {
            path: path.clone(),
            reason,
        };
        let (nhwc, h, w) = match shape.as_slice() {
            [_, h, w, 3] => (true, *h, *w),
            [_, 3, h, w] => (false, *h, *w),
            other => {
                return Err(tensors(format!(
                    "input `{input_name}` has shape {other:?}; expected [1, H, W, 3] or [1, 3, H, W]",
                )));
            }
        };
        let dim = |d: i64| if d > 0 { d as u32 } else { config.input_size };
        let output_name = match &config.output {
            Some(name) => {
                if !session.outputs().iter().any(|o| o.name() == name) {
                    return Err(tensors(format!(
                        "no output named `{name}`; the model has {:?}",
                        session
                            .outputs()
                            .iter()
                            .map(|o| o.name())
                            .collect::<Vec<_>>()
                    )));
                }
                name.clone()
            }
            None => session
                .outputs()
                .iter()
                .find(|o| {
                    model::float_shape(&path, "output", o.name(), o.dtype())
                        .is_ok_and(|s| guess_layout(&s).is_some())
                })
                .map(|o| o.name().to_owned())
                .ok_or_else(|| {
                    tensors(format!(
                        "no output has a detector layout ([1, N, 6] or [1, 4 + classes, anchors]); \
                         outputs: {:?}",
                        session
                            .outputs()
                            .iter()
                            .map(|o| format!("{} {}", o.name(), o.dtype()))
                            .collect::<Vec<_>>()
                    ))
                })?,
        };
        // A YOLOv8 output with a static class count must match the class names.
        if let Some(out) = session.outputs().iter().find(|o| o.name() == output_name)
            && let Ok(shape) = model::float_shape(&path, "output", out.name(), out.dtype())
            && guess_layout(&shape) == Some(Layout::Yolov8)
            && shape[1] > 4
            && shape[1] as usize - 4 != classes.len()
        {
            return Err(tensors(format!(
                "output `{output_name}` scores {} classes but {} names {}",
                shape[1] - 4,
                classes_path.display(),
                classes.len()
            )));
        }
        let (width, height) = (dim(w), dim(h));
        Ok(Detector {
            input_name,
            output_name,
            nhwc,
            width,
            height,
            scale: config
                .pixel_scale
                .unwrap_or(if nhwc { 1.0 } else { 1.0 / 255.0 }),
            classes,
            config: config.clone(),
            input: vec![0.0; width as usize * height as usize * 3],
            session,
            path,
        })
    }

    /// The frame size this detector wants (frames are scaled to it by the decoder).
    pub fn input_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The class names, class id N at N (the labels detections carry).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Detects objects in `frame`, which must be `input_size()`.
    pub fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Detection>, ModelError> {
        debug_assert_eq!((frame.width, frame.height), (self.width, self.height));
        let (w, h) = (self.width as usize, self.height as usize);
        if self.nhwc {
            for (dst, src) in self.input.iter_mut().zip(&frame.data) {
                *dst = f32::from(*src) * self.scale;
            }
        } else {
            let plane = w * h;
            for (i, px) in frame.data.chunks_exact(3).enumerate() {
                self.input[i] = f32::from(px[0]) * self.scale;
                self.input[plane + i] = f32::from(px[1]) * self.scale;
                self.input[2 * plane + i] = f32::from(px[2]) * self.scale;
            }
        }
        let shape = if self.nhwc {
            [1, h, w, 3]
        } else {
            [1, 3, h, w]
        };
        let run_error = |e: &dyn std::fmt::Display| ModelError::Run {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let tensor = TensorRef::from_array_view((shape, self.input.as_slice()))
            .map_err(|e| run_error(&e))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| run_error(&e))?;
        let (out_shape, values) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| run_error(&e))?;
        let out_shape: Vec<i64> = out_shape.iter().copied().collect();
        let raw = match guess_layout(&out_shape) {
            // The shared CenterNet's output still holds near-duplicates of one object.
            Some(Layout::CenterNet) => nms(
                decode_centernet(&out_shape, values, self.config.score_threshold),
                self.config.iou_threshold,
            ),
            // A dynamic class count is only known now (a static one was checked at load).
            Some(Layout::Yolov8) if out_shape[1] as usize - 4 != self.classes.len() => {
                return Err(ModelError::Tensors {
                    path: self.path.clone(),
                    reason: format!(
                        "the model scores {} classes but the class file names {}",
                        out_shape[1] - 4,
                        self.classes.len()
                    ),
                });
            }
            Some(Layout::Yolov8) => decode_yolov8(
                &out_shape,
                values,
                self.config.score_threshold,
                self.config.iou_threshold,
            ),
            None => {
                return Err(ModelError::Tensors {
                    path: self.path.clone(),
                    reason: format!(
                        "output `{}` has shape {out_shape:?}; expected [1, N, 6] or [1, 4 + classes, anchors]",
                        self.output_name
                    ),
                });
            }
        };
        let mut out = Vec::with_capacity(raw.len().min(self.config.max_detections));
        for r in raw.into_iter().take(self.config.max_detections) {
            let Some(label) = self.classes.get(r.class_id) else {
                return Err(ModelError::Tensors {
                    path: self.path.clone(),
                    reason: format!(
                        "the model gave class id {} but the class file names only {} classes",
                        r.class_id,
                        self.classes.len()
                    ),
                });
            };
            if let Some(d) = normalise(&r, self.width as f32, self.height as f32, label) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// A detection in input pixels, before naming and normalising.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawBox {
    pub class_id: usize,
    pub score: f32,
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

/// Which layout an output shape has, if any.
pub fn guess_layout(shape: &[i64]) -> Option<Layout> {
    match shape {
        [1 | -1, _, 6] => Some(Layout::CenterNet),
        [1 | -1, c, a] if *c > 4 && (*a > *c || *a < 0) => Some(Layout::Yolov8),
        _ => None,
    }
}

/// `[1, N, 6]` rows of x1, y1, x2, y2, score, class: keeps the rows scoring at least
/// `threshold`, best first.
pub fn decode_centernet(shape: &[i64], values: &[f32], threshold: f32) -> Vec<RawBox> {
    let n = shape.get(1).copied().unwrap_or(0).max(0) as usize;
    let mut out: Vec<RawBox> = values
        .chunks_exact(6)
        .take(n)
        .filter(|r| r[4].is_finite() && r[4] >= threshold && r[5] >= 0.0)
        .map(|r| RawBox {
            class_id: r[5].round() as usize,
            score: r[4],
            x1: r[0],
            y1: r[1],
            x2: r[2],
            y2: r[3],
        })
        .collect();
    sort_by_score(&mut out);
    out
}

/// `[1, 4 + C, A]`: for each anchor, the best class; keeps anchors scoring at least
/// `threshold`, then suppresses overlaps within each class. Best first.
pub fn decode_yolov8(shape: &[i64], values: &[f32], threshold: f32, iou: f32) -> Vec<RawBox> {
    let (rows, anchors) = (shape[1] as usize, shape[2] as usize);
    if values.len() < rows * anchors || rows <= 4 {
        return Vec::new();
    }
    let at = |row: usize, a: usize| values[row * anchors + a];
    let mut candidates = Vec::new();
    for a in 0..anchors {
        let (mut best, mut class_id) = (f32::NEG_INFINITY, 0);
        for c in 0..rows - 4 {
            let s = at(4 + c, a);
            if s > best {
                best = s;
                class_id = c;
            }
        }
        // Not `best < threshold`: a NaN score (or threshold) drops the anchor.
        if !matches!(
            best.partial_cmp(&threshold),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ) {
            continue;
        }
        let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
        candidates.push(RawBox {
            class_id,
            score: best,
            x1: cx - w / 2.0,
            y1: cy - h / 2.0,
            x2: cx + w / 2.0,
            y2: cy + h / 2.0,
        });
    }
    nms(candidates, iou)
}

/// Greedy per-class non-maximum suppression. Written here: it is a dozen lines, and
/// the crates that offer it bring an array library along.
pub fn nms(mut boxes: Vec<RawBox>, iou_threshold: f32) -> Vec<RawBox> {
    sort_by_score(&mut boxes);
    let mut kept: Vec<RawBox> = Vec::new();
    for b in boxes {
        if kept
            .iter()
            .all(|k| k.class_id != b.class_id || iou(k, &b) <= iou_threshold)
        {
            kept.push(b);
        }
    }
    kept
}

fn sort_by_score(boxes: &mut [RawBox]) {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
}

pub fn iou(a: &RawBox, b: &RawBox) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let area = |r: &RawBox| (r.x2 - r.x1).max(0.0) * (r.y2 - r.y1).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Clamps a pixel box into the frame and normalises it; `None` for an empty box or a
/// score outside 0..1 (which the API would refuse).
fn normalise(r: &RawBox, width: f32, height: f32, label: &str) -> Option<Detection> {
    let x1 = (r.x1 / width).clamp(0.0, 1.0);
    let y1 = (r.y1 / height).clamp(0.0, 1.0);
    let x2 = (r.x2 / width).clamp(0.0, 1.0);
    let y2 = (r.y2 / height).clamp(0.0, 1.0);
    if !(x2 > x1 && y2 > y1 && (0.0..=1.0).contains(&r.score)) {
        return None;
    }
    Some(Detection {
        class_id: r.class_id,
        label: label.to_owned(),
        score: r.score,
        x: x1,
        y: y1,
        w: x2 - x1,
        h: y2 - y1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(class_id: usize, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> RawBox {
        RawBox {
            class_id,
            score,
            x1,
            y1,
            x2,
            y2,
        }
    }

    #[test]
    fn layouts_are_told_apart_by_shape() {
        assert_eq!(guess_layout(&[1, 100, 6]), Some(Layout::CenterNet));
        assert_eq!(guess_layout(&[1, 84, 8400]), Some(Layout::Yolov8));
        assert_eq!(guess_layout(&[1, 22, 2100]), Some(Layout::Yolov8));
        assert_eq!(guess_layout(&[1, 1000]), None);
        assert_eq!(guess_layout(&[1, 100, 4]), None);
    }

    #[test]
    fn centernet_rows_below_the_threshold_are_dropped_and_the_rest_sorted() {
        let values = [
            10.0, 20.0, 30.0, 40.0, 0.5, 3.0, //
            0.0, 0.0, 5.0, 5.0, 0.1, 1.0, //
            1.0, 2.0, 3.0, 4.0, 0.9, 0.0,
        ];
        let out = decode_centernet(&[1, 3, 6], &values, 0.3);
        assert_eq!(
            out,
            vec![
                b(0, 0.9, 1.0, 2.0, 3.0, 4.0),
                b(3, 0.5, 10.0, 20.0, 30.0, 40.0)
            ]
        );
    }

    #[test]
    fn yolov8_picks_the_best_class_converts_centres_and_suppresses_overlaps() {
        // 3 anchors, 2 classes: rows cx, cy, w, h, class0, class1.
        let anchors = 3;
        let rows: [[f32; 3]; 6] = [
            [50.0, 52.0, 200.0], // cx
            [50.0, 50.0, 200.0], // cy
            [20.0, 20.0, 10.0],  // w
            [20.0, 20.0, 10.0],  // h
            [0.9, 0.8, 0.1],     // class 0
            [0.1, 0.2, 0.7],     // class 1
        ];
        let values: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let out = decode_yolov8(&[1, 6, anchors], &values, 0.25, 0.45);
        // The second anchor overlaps the first (same class, IoU ~0.82) and is suppressed.
        assert_eq!(
            out,
            vec![
                b(0, 0.9, 40.0, 40.0, 60.0, 60.0),
                b(1, 0.7, 195.0, 195.0, 205.0, 205.0)
            ]
        );
    }

    #[test]
    fn nms_keeps_overlapping_boxes_of_different_classes() {
        let kept = nms(
            vec![
                b(0, 0.9, 0.0, 0.0, 10.0, 10.0),
                b(1, 0.8, 0.0, 0.0, 10.0, 10.0),
            ],
            0.5,
        );
        assert_eq!(kept.len(), 2);
        let kept = nms(
            vec![
                b(0, 0.8, 0.0, 0.0, 10.0, 10.0),
                b(0, 0.9, 1.0, 1.0, 10.0, 10.0),
            ],
            0.5,
        );
        assert_eq!(kept, vec![b(0, 0.9, 1.0, 1.0, 10.0, 10.0)]);
    }

    #[test]
    fn boxes_are_clamped_into_the_frame_and_empty_ones_dropped() {
        let d = normalise(&b(0, 0.5, -10.0, 50.0, 60.0, 120.0), 100.0, 100.0, "cat").unwrap();
        assert_eq!((d.x, d.y, d.w, d.h), (0.0, 0.5, 0.6, 0.5));
        assert!(normalise(&b(0, 0.5, 50.0, 50.0, 50.0, 60.0), 100.0, 100.0, "cat").is_none());
        assert!(normalise(&b(0, f32::NAN, 0.0, 0.0, 5.0, 5.0), 100.0, 100.0, "cat").is_none());
    }
}
