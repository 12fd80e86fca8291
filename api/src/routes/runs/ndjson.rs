//! The one-call run format, read as it streams in: NDJSON whose first non-blank line is
//! the start request (the body of `POST /v1/operations`) and every later non-blank line
//! one annotation (an item of `POST /v1/operations/{id}/annotations`).
//!
//! [`LineSplitter`] cuts bytes into numbered lines as they arrive, each at most
//! `max_line_bytes` long; [`RunReader`] counts the whole against `max_total_bytes`,
//! parses the start line, and groups annotations into [`Batch`]es of at most `max_batch`
//! items and about `max_batch_bytes` of JSON, so a run never holds more than one batch
//! (and one partial line) in memory. Line numbers are 1-based and count every line,
//! blank ones too, so they match what an editor shows. Nothing here knows HTTP.

use annostore_core::model::StartOperation;
use axum::body::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::fmt::Display;

/// What one run may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Longest line, in bytes (without its line feed).
    pub max_line_bytes: usize,
    /// Largest run, in bytes.
    pub max_total_bytes: u64,
    /// Most annotations in one batch (the service's `max_batch`).
    pub max_batch: usize,
    /// A batch ends once its lines add up to this many bytes.
    pub max_batch_bytes: usize,
}

/// Why a run's bytes cannot be read as a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(
        "the body has no start request: its first line must be the JSON body of \
         POST /v1/operations"
    )]
    NoStart,
    #[error("line {line} is not a start request (the JSON body of POST /v1/operations): {reason}")]
    BadStart { line: u64, reason: String },
    #[error("line {line} is not JSON: {reason}")]
    BadJson { line: u64, reason: String },
    #[error("line {line} is longer than {max} bytes")]
    LineTooLong { line: u64, max: usize },
    #[error("the run is larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("the body was cut short: {0}")]
    Body(String),
}

impl ReadError {
    /// The line at fault, when one is.
    pub fn line(&self) -> Option<u64> {
        match self {
            ReadError::BadStart { line, .. }
            | ReadError::BadJson { line, .. }
            | ReadError::LineTooLong { line, .. } => Some(*line),
            ReadError::NoStart | ReadError::TooLarge { .. } | ReadError::Body(_) => None,
        }
    }
}

/// One line: its 1-based number and its bytes, without the line feed (nor a carriage
/// return before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: u64,
    pub bytes: Bytes,
}

impl Line {
    fn is_blank(&self) -> bool {
        self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

/// Cuts bytes into lines as they arrive. A line within one chunk is a slice of it (no
/// copy); only a line split across chunks is copied, and never beyond the bound.
#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// The number of the line being read.
    next: u64,
    max: usize,
}

impl LineSplitter {
    pub fn new(max_line_bytes: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            next: 1,
            max: max_line_bytes,
        }
    }

    /// Appends to `out` the lines that `chunk` completes, in order.
    pub fn feed(&mut self, chunk: &Bytes, out: &mut VecDeque<Line>) -> Result<(), ReadError> {
        let mut rest = chunk.clone();
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let head = rest.split_to(pos + 1).slice(..pos);
            let line = if self.partial.is_empty() {
                head
            } else {
                self.check_partial(head.len())?;
                self.partial.extend_from_slice(&head);
                Bytes::from(std::mem::take(&mut self.partial))
            };
            self.emit(line, out)?;
        }
        if !rest.is_empty() {
            self.check_partial(rest.len())?;
            self.partial.extend_from_slice(&rest);
        }
        Ok(())
    }

    /// Appends the last line, when the input did not end with a line feed.
    pub fn finish(&mut self, out: &mut VecDeque<Line>) -> Result<(), ReadError> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let line = Bytes::from(std::mem::take(&mut self.partial));
        self.emit(line, out)
    }

    /// Refuses to grow the unfinished line past the bound (one byte more for a `\r`).
    fn check_partial(&self, more: usize) -> Result<(), ReadError> {
        if self.partial.len() + more > self.max.saturating_add(1) {
            return Err(ReadError::LineTooLong {
                line: self.next,
                max: self.max,
            });
        }
        Ok(())
    }

    fn emit(&mut self, mut line: Bytes, out: &mut VecDeque<Line>) -> Result<(), ReadError> {
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.len() > self.max {
            return Err(ReadError::LineTooLong {
                line: self.next,
                max: self.max,
            });
        }
        out.push_back(Line {
            number: self.next,
            bytes: line,
        });
        self.next += 1;
        Ok(())
    }
}

/// Annotations for one upsert, with the line each came from.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub items: Vec<Value>,
    pub lines: Vec<u64>,
}

impl Batch {
    /// The line of the batch's `index`-th item.
    pub fn line_of(&self, index: usize) -> Option<u64> {
        self.lines.get(index).copied()
    }
}

/// A run read from a stream of byte chunks (a request body, a file).
pub struct RunReader<S> {
    stream: S,
    splitter: LineSplitter,
    ready: VecDeque<Line>,
    bounds: Bounds,
    total: u64,
    /// The stream ended (or failed).
    ended: bool,
    /// What stopped the reading, returned once the lines before it are taken.
    failed: Option<ReadError>,
}

impl<S, E> RunReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    pub fn new(stream: S, bounds: Bounds) -> RunReader<S> {
        RunReader {
            stream,
            splitter: LineSplitter::new(bounds.max_line_bytes),
            ready: VecDeque::new(),
            bounds,
            total: 0,
            ended: false,
            failed: None,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.total
    }

    /// The next non-blank line; `None` at the end of the input. An error comes only
    /// after every line before it (a chunk may complete line 1 and overflow line 5).
    async fn next_line(&mut self) -> Result<Option<Line>, ReadError> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                if line.is_blank() {
                    continue;
                }
                return Ok(Some(line));
            }
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            if self.ended {
                return Ok(None);
            }
            let fed = match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.total += chunk.len() as u64;
                    if self.total > self.bounds.max_total_bytes {
                        Err(ReadError::TooLarge {
                            max: self.bounds.max_total_bytes,
                        })
                    } else {
                        self.splitter.feed(&chunk, &mut self.ready)
                    }
                }
                Some(Err(e)) => {
                    self.ended = true;
                    Err(ReadError::Body(e.to_string()))
                }
                None => {
                    self.ended = true;
                    self.splitter.finish(&mut self.ready)
                }
            };
            if let Err(e) = fed {
                self.failed = Some(e);
            }
        }
    }

    /// Reads and drops what is left of the input, at most `budget` bytes more: after a
    /// failure, so that the client, still sending, reads the answer instead of a reset
    /// connection. True when the input ended.
    pub async fn discard(&mut self, budget: u64) -> bool {
        let mut left = budget;
        while !self.ended {
            match self.stream.next().await {
                Some(Ok(chunk)) if (chunk.len() as u64) <= left => left -= chunk.len() as u64,
                Some(Ok(_)) => return false,
                Some(Err(_)) | None => self.ended = true,
            }
        }
        true
    }

    /// The start request (the first non-blank line), and its line number.
    pub async fn start(&mut self) -> Result<(u64, StartOperation), ReadError> {
        let line = self.next_line().await?.ok_or(ReadError::NoStart)?;
        let start = serde_json::from_slice(&line.bytes).map_err(|e| ReadError::BadStart {
            line: line.number,
            reason: e.to_string(),
        })?;
        Ok((line.number, start))
    }

    /// The next batch of annotations; `None` once the input has no more. Each line is
    /// parsed as JSON here; what the JSON must hold is the service's to check.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>, ReadError> {
        let mut batch = Batch::default();
        let mut bytes = 0usize;
        while batch.items.len() < self.bounds.max_batch && bytes < self.bounds.max_batch_bytes {
            let Some(line) = self.next_line().await? else {
                break;
            };
            let item: Value =
                serde_json::from_slice(&line.bytes).map_err(|e| ReadError::BadJson {
                    line: line.number,
                    reason: e.to_string(),
                })?;
            bytes += line.bytes.len();
            batch.items.push(item);
            batch.lines.push(line.number);
        }
        Ok((!batch.items.is_empty()).then_some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const START: &str =
        r#"{"annotation_type": "objects", "annotation_type_version": 1, "pivot_id": "p"}"#;

    fn bounds() -> Bounds {
        Bounds {
            max_line_bytes: 1_000,
            max_total_bytes: 1_000_000,
            max_batch: 3,
            max_batch_bytes: 1_000_000,
        }
    }

    /// `text` cut into chunks of `size` bytes, as a body would arrive.
    fn chunks(text: &str, size: usize) -> Vec<Result<Bytes, String>> {
        text.as_bytes()
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    fn reader(
        parts: Vec<Result<Bytes, String>>,
        bounds: Bounds,
    ) -> RunReader<futures::stream::Iter<std::vec::IntoIter<Result<Bytes, String>>>> {
        RunReader::new(futures::stream::iter(parts), bounds)
    }

    /// Every batch of the run (after its start), or the first error.
    async fn batches<S: Stream<Item = Result<Bytes, String>> + Unpin>(
        r: &mut RunReader<S>,
    ) -> Result<Vec<Batch>, ReadError> {
        let mut out = Vec::new();
        while let Some(b) = r.next_batch().await? {
            out.push(b);
        }
        Ok(out)
    }

    fn run_text(annotations: usize) -> String {
        let mut text = format!("{START}\n");
        for i in 0..annotations {
            text.push_str(&json!({"i": i}).to_string());
            text.push('\n');
        }
        text
    }

    #[test]
    fn lines_split_across_chunks_keep_their_numbers() {
        let text = "a\r\nbb\n\nccc\nd";
        for size in 1..=text.len() {
            let mut s = LineSplitter::new(10);
            let mut out = VecDeque::new();
            for c in chunks(text, size) {
                s.feed(&c.unwrap(), &mut out).unwrap();
            }
            s.finish(&mut out).unwrap();
            let got: Vec<(u64, &[u8])> = out.iter().map(|l| (l.number, &l.bytes[..])).collect();
            let want: Vec<(u64, &[u8])> =
                vec![(1, b"a"), (2, b"bb"), (3, b""), (4, b"ccc"), (5, b"d")];
            assert_eq!(got, want, "chunks of {size}");
        }
    }

    #[test]
    fn a_line_over_the_bound_is_refused_with_its_number_whatever_the_chunks() {
        let text = "12345\n123456\n1";
        for size in 1..=text.len() {
            let mut s = LineSplitter::new(5);
            let mut out = VecDeque::new();
            let err = chunks(text, size)
                .into_iter()
                .try_for_each(|c| s.feed(&c.unwrap(), &mut out))
                .unwrap_err();
            assert_eq!(err, ReadError::LineTooLong { line: 2, max: 5 }, "{size}");
            assert_eq!(out.len(), 1, "line 1 was within the bound");
        }
        // A carriage return before the line feed does not count.
        let mut s = LineSplitter::new(5);
        let mut out = VecDeque::new();
        s.feed(&Bytes::from_static(b"12345\r\n"), &mut out).unwrap();
        assert_eq!(&out[0].bytes[..], b"12345");
        // Nor does an unfinished line grow past it.
        let mut s = LineSplitter::new(5);
        s.feed(&Bytes::from_static(b"123"), &mut out).unwrap();
        let err = s.feed(&Bytes::from_static(b"4567"), &mut out).unwrap_err();
        assert_eq!(err, ReadError::LineTooLong { line: 1, max: 5 });
    }

    #[tokio::test]
    async fn annotations_come_in_batches_of_max_batch_with_their_lines() {
        let text = run_text(7);
        for size in [1, 7, 64, text.len()] {
            let mut r = reader(chunks(&text, size), bounds());
            let (line, start) = r.start().await.unwrap();
            assert_eq!((line, start.pivot_id.as_str()), (1, "p"));
            let got = batches(&mut r).await.unwrap();
            let sizes: Vec<usize> = got.iter().map(|b| b.items.len()).collect();
            assert_eq!(sizes, [3, 3, 1]);
            assert_eq!(got[1].lines, [5, 6, 7]);
            assert_eq!(got[1].items[0], json!({"i": 3}));
            assert_eq!(got[2].line_of(0), Some(8));
            assert_eq!(r.bytes_read(), text.len() as u64);
        }
    }

    #[tokio::test]
    async fn a_batch_also_ends_at_its_byte_bound() {
        let bounds = Bounds {
            max_batch: 100,
            max_batch_bytes: 20,
            ..bounds()
        };
        // Each annotation line is 8 bytes: a batch takes lines until 20 bytes or more.
        let mut r = reader(chunks(&run_text(7), 16), bounds);
        r.start().await.unwrap();
        let sizes: Vec<usize> = batches(&mut r)
            .await
            .unwrap()
            .iter()
            .map(|b| b.items.len())
            .collect();
        assert_eq!(sizes, [3, 3, 1]);
    }

    #[tokio::test]
    async fn blank_lines_are_skipped_but_counted() {
        let text = format!("\n  \n{START}\r\n\n{{\"a\": 1}}\n\t\n{{\"b\": 2}}");
        let mut r = reader(chunks(&text, 5), bounds());
        assert_eq!(r.start().await.unwrap().0, 3);
        let got = batches(&mut r).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].items, [json!({"a": 1}), json!({"b": 2})]);
        assert_eq!(got[0].lines, [5, 7]);
    }

    #[tokio::test]
    async fn a_run_of_only_its_start_has_no_batch_and_an_empty_body_no_start() {
        let mut r = reader(chunks(&format!("{START}\n\n"), 10), bounds());
        r.start().await.unwrap();
        assert_eq!(batches(&mut r).await.unwrap(), []);
        let mut r = reader(vec![], bounds());
        assert_eq!(r.start().await.unwrap_err(), ReadError::NoStart);
        let mut r = reader(chunks("\n \n", 1), bounds());
        assert_eq!(r.start().await.unwrap_err(), ReadError::NoStart);
    }

    #[tokio::test]
    async fn a_bad_start_or_a_bad_line_is_named_by_its_number() {
        let mut r = reader(chunks("\n{\"pivot_id\": \"p\"}\n", 4), bounds());
        let err = r.start().await.unwrap_err();
        assert!(
            matches!(err, ReadError::BadStart { line: 2, .. }),
            "{err:?}"
        );
        assert_eq!(err.line(), Some(2));

        let mut text = run_text(5);
        text.push_str("{\"i\": oops}\n{\"i\": 6}\n");
        let mut r = reader(chunks(&text, 9), bounds());
        r.start().await.unwrap();
        // The first batch is whole; the second holds the bad line 7.
        assert_eq!(r.next_batch().await.unwrap().unwrap().lines, [2, 3, 4]);
        let err = r.next_batch().await.unwrap_err();
        assert!(matches!(err, ReadError::BadJson { line: 7, .. }), "{err:?}");
        assert!(err.to_string().starts_with("line 7 is not JSON"), "{err}");
    }

    #[tokio::test]
    async fn an_error_comes_after_the_lines_before_it() {
        let long = format!("{{\"pad\": \"{}\"}}", "x".repeat(2_000));
        let text = format!("{START}\n{{\"a\": 1}}\n{long}\n{{\"b\": 2}}\n");
        let mut r = reader(chunks(&text, text.len()), bounds());
        assert_eq!(r.start().await.unwrap().0, 1);
        let err = r.next_batch().await.unwrap_err();
        assert_eq!(
            err,
            ReadError::LineTooLong {
                line: 3,
                max: 1_000
            }
        );
        // And stays: nothing after it is read as a run.
        assert_eq!(r.next_batch().await.unwrap_err(), err);
        assert!(r.discard(1_000_000).await, "what is left is drained");
    }

    #[tokio::test]
    async fn a_run_over_its_size_and_a_body_cut_short_are_errors() {
        let text = run_text(100);
        let bounds = Bounds {
            max_total_bytes: 500,
            ..bounds()
        };
        let mut r = reader(chunks(&text, 64), bounds);
        r.start().await.unwrap();
        assert_eq!(
            batches(&mut r).await.unwrap_err(),
            ReadError::TooLarge { max: 500 }
        );
        assert!(r.bytes_read() <= 500 + 64, "reading stopped at the bound");

        let mut parts = chunks(&run_text(4), 32);
        parts.push(Err("connection reset".into()));
        let mut r = reader(parts, super::tests::bounds());
        r.start().await.unwrap();
        let err = batches(&mut r).await.unwrap_err();
        assert_eq!(err, ReadError::Body("connection reset".into()));
        assert_eq!(err.line(), None);
    }
}
