//! Time ranges: the relations an annotation may have to a range, and frame-accurate
//! ends normalised to milliseconds.

use serde::{Deserialize, Serialize};

/// How an annotation's `[start_ms, end_ms]` must relate to a time range (both closed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeRelation {
    /// They share at least one millisecond (touching ends match).
    #[default]
    Intersects,
    /// The annotation lies inside the range.
    Within,
    /// The annotation covers the whole range.
    Contains,
}

impl TimeRelation {
    pub fn is_default(&self) -> bool {
        *self == TimeRelation::Intersects
    }

    /// True when `[start, end]` relates to `[from, to]` this way.
    pub fn holds(self, start: i64, end: i64, from: i64, to: i64) -> bool {
        match self {
            TimeRelation::Intersects => start <= to && end >= from,
            TimeRelation::Within => start >= from && end <= to,
            TimeRelation::Contains => start <= from && end >= to,
        }
    }
}

/// A frame of a video with a rational frame rate (`rate_num / rate_den` frames per
/// second, e.g. 30000/1001). Frame `n` lasts from `n * rate_den / rate_num` seconds
/// (inclusive) to `(n + 1) * rate_den / rate_num` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameTime {
    pub frame: u64,
    pub rate_num: u32,
    pub rate_den: u32,
}

impl FrameTime {
    /// The millisecond in which the frame begins: floor(frame * 1000 * den / num).
    pub fn first_ms(&self) -> Result<i64, String> {
        self.boundary_ms(self.frame, false)
    }

    /// The last millisecond the frame covers: ceil((frame + 1) * 1000 * den / num) - 1,
    /// never before its first.
    pub fn last_ms(&self) -> Result<i64, String> {
        let end = self.boundary_ms(self.frame.saturating_add(1), true)?;
        Ok((end - 1).max(self.first_ms()?))
    }

    fn boundary_ms(&self, frame: u64, round_up: bool) -> Result<i64, String> {
        if self.rate_num == 0 || self.rate_den == 0 {
            return Err("rate_num and rate_den must be at least 1".into());
        }
        let num = u128::from(self.rate_num);
        let scaled = u128::from(frame) * 1000 * u128::from(self.rate_den);
        let ms = if round_up {
            scaled.div_ceil(num)
        } else {
            scaled / num
        };
        i64::try_from(ms).map_err(|_| "frame time out of range".to_string())
    }
}

/// A time range in milliseconds, both ends included, and how annotations must relate to
/// it. Clients may give either end as a frame instead (`start` / `end`, see
/// [`FrameTime`]); it is normalised to milliseconds when read, so engines only ever see
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TimeRangeWire")]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default, skip_serializing_if = "TimeRelation::is_default")]
    pub relation: TimeRelation,
}

impl TimeRange {
    /// An intersecting range.
    pub fn new(start_ms: i64, end_ms: i64) -> TimeRange {
        TimeRange {
            start_ms,
            end_ms,
            relation: TimeRelation::Intersects,
        }
    }

    pub fn holds(&self, start_ms: i64, end_ms: i64) -> bool {
        self.relation
            .holds(start_ms, end_ms, self.start_ms, self.end_ms)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeRangeWire {
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    start: Option<FrameTime>,
    end: Option<FrameTime>,
    #[serde(default)]
    relation: TimeRelation,
}

impl TryFrom<TimeRangeWire> for TimeRange {
    type Error = String;

    fn try_from(w: TimeRangeWire) -> Result<TimeRange, String> {
        let start_ms = match (w.start_ms, w.start) {
            (Some(ms), None) => ms,
            (None, Some(f)) => f.first_ms()?,
            (None, None) => return Err("time_range needs start_ms or start (a frame)".into()),
            (Some(_), Some(_)) => return Err("time_range takes start_ms or start, not both".into()),
        };
        let end_ms = match (w.end_ms, w.end) {
            (Some(ms), None) => ms,
            (None, Some(f)) => f.last_ms()?,
            (None, None) => return Err("time_range needs end_ms or end (a frame)".into()),
            (Some(_), Some(_)) => return Err("time_range takes end_ms or end, not both".into()),
        };
        Ok(TimeRange {
            start_ms,
            end_ms,
            relation: w.relation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_map_to_the_milliseconds_they_cover() {
        let f = |frame| FrameTime {
            frame,
            rate_num: 30000,
            rate_den: 1001,
        };
        // Frame 0: [0, 33.366...) ms.
        assert_eq!(f(0).first_ms().unwrap(), 0);
        assert_eq!(f(0).last_ms().unwrap(), 33);
        // Frame 30: [1001, 1034.366...) ms.
        assert_eq!(f(30).first_ms().unwrap(), 1001);
        assert_eq!(f(30).last_ms().unwrap(), 1034);
        let p = FrameTime {
            frame: 25,
            rate_num: 25,
            rate_den: 1,
        };
        assert_eq!((p.first_ms().unwrap(), p.last_ms().unwrap()), (1000, 1039));
        let bad = FrameTime {
            frame: 1,
            rate_num: 0,
            rate_den: 1,
        };
        assert!(bad.first_ms().is_err());
    }

    #[test]
    fn time_ranges_read_frames_and_milliseconds() {
        let r: TimeRange = serde_json::from_str(
            r#"{"start": {"frame": 30, "rate_num": 30000, "rate_den": 1001}, "end_ms": 2000, "relation": "within"}"#,
        )
        .unwrap();
        assert_eq!((r.start_ms, r.end_ms), (1001, 2000));
        assert_eq!(r.relation, TimeRelation::Within);
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            serde_json::json!({"start_ms": 1001, "end_ms": 2000, "relation": "within"})
        );
        assert!(serde_json::from_str::<TimeRange>(r#"{"start_ms": 1}"#).is_err());
        assert!(
            serde_json::from_str::<TimeRange>(
                r#"{"start_ms": 1, "start": {"frame": 1, "rate_num": 1, "rate_den": 1}, "end_ms": 3}"#
            )
            .is_err()
        );
    }

    #[test]
    fn time_relations() {
        let r = |rel| TimeRange {
            start_ms: 10,
            end_ms: 20,
            relation: rel,
        };
        use TimeRelation::*;
        assert!(r(Intersects).holds(20, 30) && !r(Intersects).holds(21, 30));
        assert!(r(Within).holds(10, 20) && !r(Within).holds(9, 20));
        assert!(
            r(Contains).holds(10, 20) && r(Contains).holds(0, 30) && !r(Contains).holds(11, 30)
        );
    }
}
