//! Video decoding with FFmpeg (ffmpeg-next): probe a video, then sample one segment
//! of it at fixed times, each sample scaled by swscale straight to the detector's
//! input size as packed RGB.
//!
//! A `Sampler` reuses its frames: one decoded frame and one scaled frame for the
//! whole segment (allocating a new output frame per decoded frame cost 2.5x).

use ffmpeg::codec::discard::Discard;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame;
use ffmpeg::{Dictionary, Rational};
use ffmpeg_next as ffmpeg;
use std::sync::Once;

/// A video that cannot be read, named with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{source_name}: cannot open: {reason}")]
    Open { source_name: String, reason: String },
    #[error("{source_name}: not a video (no video stream)")]
    NoVideo { source_name: String },
    #[error("{source_name}: corrupt video stream near {at_ms} ms: {reason}")]
    Corrupt {
        source_name: String,
        at_ms: u64,
        reason: String,
    },
    #[error("{source_name}: {reason}")]
    Other { source_name: String, reason: String },
}

/// What a probe of a video found.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    pub duration_ms: u64,
    pub width: u32,
    pub height: u32,
    /// Average frame rate of the video stream (0 when the container does not say).
    pub frame_rate: f64,
    pub codec: String,
}

/// An RGB24 image, rows packed without padding.
#[derive(Debug, Clone, Default)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Only fails when FFmpeg's network layer cannot start; opening a URL then
        // reports its own error.
        let _ = ffmpeg::init();
        // FFmpeg's own messages would break the progress bars; what goes wrong reaches
        // the caller as an error instead.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

fn open_input(source: &str) -> Result<ffmpeg::format::context::Input, MediaError> {
    init();
    let mut options = Dictionary::new();
    if source.starts_with("http://") || source.starts_with("https://") {
        // Give up on a dead server instead of waiting forever (microseconds).
        options.set("rw_timeout", "30000000");
        options.set("reconnect", "1");
    }
    ffmpeg::format::input_with_dictionary(&source, options).map_err(|e| MediaError::Open {
        source_name: source.to_owned(),
        reason: e.to_string(),
    })
}

/// The best video stream of an opened input: its index, time base and codec context.
fn video_stream(
    input: &ffmpeg::format::context::Input,
    source: &str,
) -> Result<(usize, Rational, ffmpeg::codec::context::Context), MediaError> {
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| MediaError::NoVideo {
            source_name: source.to_owned(),
        })?;
    let ctx =
        ffmpeg::codec::context::Context::from_parameters(stream.parameters()).map_err(|e| {
            MediaError::Other {
                source_name: source.to_owned(),
                reason: format!("reading the video stream's parameters: {e}"),
            }
        })?;
    Ok((stream.index(), stream.time_base(), ctx))
}

/// Opens `source` (a path or an http(s) URL) and reads its length, size and rate.
pub fn probe(source: &str) -> Result<MediaInfo, MediaError> {
    let input = open_input(source)?;
    let (index, _, ctx) = video_stream(&input, source)?;
    let stream = input.stream(index).ok_or_else(|| MediaError::NoVideo {
        source_name: source.to_owned(),
    })?;
    let decoder = ctx.decoder().video().map_err(|e| MediaError::Other {
        source_name: source.to_owned(),
        reason: format!("no decoder for the video stream: {e}"),
    })?;
    let duration_ms = if stream.duration() > 0 {
        rescale_ms(stream.duration(), stream.time_base())
    } else if input.duration() > 0 {
        (input.duration() / 1000) as u64
    } else {
        0
    };
    if duration_ms == 0 {
        return Err(MediaError::Other {
            source_name: source.to_owned(),
            reason: "the video has no duration".into(),
        });
    }
    let rate = stream.avg_frame_rate();
    Ok(MediaInfo {
        duration_ms,
        width: decoder.width(),
        height: decoder.height(),
        frame_rate: if rate.denominator() != 0 {
            f64::from(rate.numerator()) / f64::from(rate.denominator())
        } else {
            0.0
        },
        codec: decoder
            .codec()
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| "unknown".into()),
    })
}

fn rescale_ms(ts: i64, time_base: Rational) -> u64 {
    let ms = ts as f64 * f64::from(time_base.numerator()) * 1000.0
        / f64::from(time_base.denominator().max(1));
    ms.max(0.0).round() as u64
}

/// Decodes one video and hands out frames at chosen times, scaled to a fixed size.
pub struct Sampler {
    source: String,
    input: ffmpeg::format::context::Input,
    stream_index: usize,
    time_base: Rational,
    decoder: ffmpeg::decoder::Video,
    decoded: frame::Video,
    /// Frames at the model's input size.
    model: Scaled,
    /// Frames at (up to) the video's own size, to cut crops from, when asked for.
    crops: Option<Scaled>,
    /// Frames decoded since open (sampled or not): decode speed.
    pub frames_decoded: u64,
    /// Skip decoding frames no other frame refers to while the next wanted time is
    /// further than `SKIP_MARGIN_MS` ahead (on by default; the samples are the same).
    pub skip_unneeded: bool,
    discard: Discard,
}

/// Frames presented this much before the next wanted time are never handed out, so
/// those that are not references need not be decoded. Wider than any B-frame delay.
const SKIP_MARGIN_MS: u64 = 500;

impl Sampler {
    /// Opens `source` for sampling at `width` x `height` RGB. `threads` is the decoder's
    /// thread count (1 when several segments decode in parallel).
    pub fn open(source: &str, width: u32, height: u32, threads: usize) -> Result<Self, MediaError> {
        let input = open_input(source)?;
        let (stream_index, time_base, mut ctx) = video_stream(&input, source)?;
        ctx.set_threading(ffmpeg::codec::threading::Config::count(threads.max(1)));
        // Report damaged data as an error instead of concealing it: a run computed from
        // a broken stream must not be finished as if it were whole.
        let mut options = Dictionary::new();
        options.set("err_detect", "explode");
        let codec = ffmpeg::decoder::find(ctx.id()).ok_or_else(|| MediaError::Other {
            source_name: source.to_owned(),
            reason: format!("no decoder for {:?} in this FFmpeg", ctx.id()),
        })?;
        let decoder = ctx
            .decoder()
            .open_as_with(codec, options)
            .and_then(|d| d.video())
            .map_err(|e| MediaError::Other {
                source_name: source.to_owned(),
                reason: format!("cannot decode the video stream: {e}"),
            })?;
        let model = Scaled::new(&decoder, width, height, source)?;
        Ok(Sampler {
            source: source.to_owned(),
            input,
            stream_index,
            time_base,
            decoder,
            decoded: frame::Video::empty(),
            model,
            crops: None,
            frames_decoded: 0,
            skip_unneeded: true,
            discard: Discard::Default,
        })
    }

    /// Also hands out each sample at the video's own size, or `max_width` wide when it
    /// is wider (aspect kept): crops cut from it keep the detail the model's stretched
    /// input lost.
    pub fn with_crop_frames(mut self, max_width: u32) -> Result<Self, MediaError> {
        let (w, h) = (self.decoder.width(), self.decoder.height());
        let (cw, ch) = if w <= max_width {
            (w, h)
        } else {
            let ch = (u64::from(h) * u64::from(max_width) / u64::from(w.max(1))).max(2) as u32;
            (max_width, ch & !1)
        };
        self.crops = Some(Scaled::new(&self.decoder, cw, ch, &self.source)?);
        Ok(self)
    }

    /// Calls `on_sample(t, frames)` once for each time `t` of `times_ms` (ascending), with
    /// the first frame shown at or after `t`. Times past the last frame get no call.
    /// Returns how many samples were handed out.
    pub fn sample<E>(
        &mut self,
        times_ms: &[u64],
        mut on_sample: impl FnMut(u64, &mut Frames<'_>) -> Result<(), E>,
    ) -> Result<usize, SampleError<E>> {
        let Some(&first) = times_ms.first() else {
            return Ok(0);
        };
        // Seek to the key frame at or before the first time, then decode forward.
        let target_us = first as i64 * 1000;
        if first > 0 {
            self.input
                .seek(target_us, ..target_us)
                .map_err(|e| self.other(first, format!("seeking to {first} ms: {e}")))?;
        }
        self.decoder.flush();
        let mut next = 0usize;
        let mut packet = ffmpeg::Packet::empty();
        let mut last_ms = first;
        loop {
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => break,
                Err(e) => return Err(self.corrupt(last_ms, format!("reading the container: {e}"))),
            }
            if packet.stream() != self.stream_index {
                continue;
            }
            // At 1 sample per second of a 30 fps video, most frames are never shown to
            // a model: those that are not references are not even decoded.
            let far = self.skip_unneeded
                && next < times_ms.len()
                && packet.pts().is_some_and(|p| {
                    rescale_ms(p, self.time_base) + SKIP_MARGIN_MS < times_ms[next]
                });
            let discard = if far {
                Discard::NonReference
            } else {
                Discard::Default
            };
            if discard != self.discard {
                self.decoder.skip_frame(discard);
                self.discard = discard;
            }
            if let Err(e) = self.decoder.send_packet(&packet) {
                return Err(self.corrupt(last_ms, e.to_string()));
            }
            next = self.drain(times_ms, next, &mut last_ms, &mut on_sample)?;
            if next == times_ms.len() {
                return Ok(next);
            }
        }
        // End of the file: the decoder may still hold frames.
        let _ = self.decoder.send_eof();
        next = self.drain(times_ms, next, &mut last_ms, &mut on_sample)?;
        Ok(next)
    }

    /// Receives every frame the decoder has ready; hands out those that reach the next
    /// wanted time. Returns the index of the next wanted time.
    fn drain<E>(
        &mut self,
        times_ms: &[u64],
        mut next: usize,
        last_ms: &mut u64,
        on_sample: &mut impl FnMut(u64, &mut Frames<'_>) -> Result<(), E>,
    ) -> Result<usize, SampleError<E>> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(next),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(next);
                }
                Err(e) => return Err(self.corrupt(*last_ms, e.to_string())),
            }
            self.frames_decoded += 1;
            let Some(ts) = self.decoded.timestamp().or(self.decoded.pts()) else {
                continue;
            };
            let frame_ms = rescale_ms(ts, self.time_base);
            *last_ms = frame_ms;
            if next >= times_ms.len() || frame_ms < times_ms[next] {
                continue;
            }
            self.model.run(&self.decoded).map_err(|e| {
                SampleError::Media(MediaError::Other {
                    source_name: self.source.clone(),
                    reason: format!("scaling a frame: {e} (near {frame_ms} ms)"),
                })
            })?;
            let mut frames = Frames {
                model: &self.model.image,
                decoded: &self.decoded,
                crops: self.crops.as_mut().map(|c| (c, false)),
                source: &self.source,
                at_ms: frame_ms,
            };
            // One decoded frame can stand for several wanted times when sampling faster
            // than the video's own rate.
            while next < times_ms.len() && times_ms[next] <= frame_ms {
                on_sample(times_ms[next], &mut frames).map_err(SampleError::Sink)?;
                next += 1;
            }
        }
    }

    fn corrupt<E>(&self, at_ms: u64, reason: String) -> SampleError<E> {
        SampleError::Media(MediaError::Corrupt {
            source_name: self.source.clone(),
            at_ms,
            reason,
        })
    }

    fn other<E>(&self, at_ms: u64, reason: String) -> SampleError<E> {
        SampleError::Media(MediaError::Other {
            source_name: self.source.clone(),
            reason: format!("{reason} (near {at_ms} ms)"),
        })
    }
}

/// Why sampling stopped: the video, or the caller's sink.
#[derive(Debug, thiserror::Error)]
pub enum SampleError<E> {
    #[error(transparent)]
    Media(MediaError),
    #[error(transparent)]
    Sink(E),
}

/// One sample: as the model sees it, and, scaled only when asked for, at the size
/// crops are cut from.
pub struct Frames<'a> {
    pub model: &'a RgbImage,
    decoded: &'a frame::Video,
    /// The crop-size scaler and whether it already holds this sample.
    crops: Option<(&'a mut Scaled, bool)>,
    source: &'a str,
    at_ms: u64,
}

impl Frames<'_> {
    /// The sample at the crop size (`Sampler::with_crop_frames`), else the model's
    /// image. Scaled on the first call: frames without detections never pay for it.
    pub fn crops(&mut self) -> Result<&RgbImage, MediaError> {
        match &mut self.crops {
            None => Ok(self.model),
            Some((scaled, done)) => {
                if !*done {
                    scaled.run(self.decoded).map_err(|e| MediaError::Other {
                        source_name: self.source.to_owned(),
                        reason: format!("scaling a frame: {e} (near {} ms)", self.at_ms),
                    })?;
                    *done = true;
                }
                Ok(&scaled.image)
            }
        }
    }
}

/// A swscale context to one RGB size, with its reused output frame and packed image.
struct Scaled {
    scaler: scaling::Context,
    frame: frame::Video,
    image: RgbImage,
}

impl Scaled {
    fn new(
        decoder: &ffmpeg::decoder::Video,
        width: u32,
        height: u32,
        source: &str,
    ) -> Result<Scaled, MediaError> {
        let scaler = scaling::Context::get(
            decoder.format(),
            decoder.width(),
            decoder.height(),
            Pixel::RGB24,
            width,
            height,
            scaling::Flags::BILINEAR,
        )
        .map_err(|e| MediaError::Other {
            source_name: source.to_owned(),
            reason: format!(
                "cannot scale {:?} {}x{} to RGB {width}x{height}: {e}",
                decoder.format(),
                decoder.width(),
                decoder.height()
            ),
        })?;
        Ok(Scaled {
            scaler,
            frame: frame::Video::new(Pixel::RGB24, width, height),
            image: RgbImage {
                width,
                height,
                data: Vec::with_capacity(width as usize * height as usize * 3),
            },
        })
    }

    fn run(&mut self, decoded: &frame::Video) -> Result<(), ffmpeg::Error> {
        self.scaler.run(decoded, &mut self.frame)?;
        copy_packed(&self.frame, &mut self.image);
        Ok(())
    }
}

/// swscale's frames pad their rows; the models want them packed.
fn copy_packed(scaled: &frame::Video, image: &mut RgbImage) {
    let row = image.width as usize * 3;
    let stride = scaled.stride(0);
    let plane = scaled.data(0);
    image.data.clear();
    for y in 0..image.height as usize {
        image
            .data
            .extend_from_slice(&plane[y * stride..y * stride + row]);
    }
}
