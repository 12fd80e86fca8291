//! Regions of the frame, and boxes as the corners every engine compares.

use serde::{Deserialize, Serialize};

/// How a box must relate to a region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceRelation {
    /// They share at least a point (touching edges match).
    #[default]
    Intersects,
    /// The box lies inside the region.
    Within,
}

impl SpaceRelation {
    pub fn is_default(&self) -> bool {
        *self == SpaceRelation::Intersects
    }
}

/// A region of the frame in normalised coordinates (0..1, (x, y) the top-left corner).
/// Annotations without a box never match a region.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    #[serde(default, skip_serializing_if = "SpaceRelation::is_default")]
    pub relation: SpaceRelation,
}

/// A box's corners as engines index them: f64, computed from the f32 box as
/// `x1 = x, x2 = x + w` (in f64), so every engine compares the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Corners {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

impl Corners {
    pub fn of(b: &crate::model::BBox) -> Corners {
        let (x, y) = (f64::from(b.x), f64::from(b.y));
        Corners {
            x1: x,
            y1: y,
            x2: x + f64::from(b.w),
            y2: y + f64::from(b.h),
        }
    }
}

impl Region {
    /// The region's corners, computed as a box's are.
    pub fn corners(&self) -> Corners {
        Corners {
            x1: self.x,
            y1: self.y,
            x2: self.x + self.w,
            y2: self.y + self.h,
        }
    }

    pub fn holds(&self, b: &Corners) -> bool {
        let r = self.corners();
        match self.relation {
            SpaceRelation::Intersects => {
                b.x1 <= r.x2 && b.x2 >= r.x1 && b.y1 <= r.y2 && b.y2 >= r.y1
            }
            SpaceRelation::Within => b.x1 >= r.x1 && b.x2 <= r.x2 && b.y1 >= r.y1 && b.y2 <= r.y2,
        }
    }

    /// Problems with the region, if any.
    pub fn check(&self) -> Result<(), String> {
        let all = [self.x, self.y, self.w, self.h];
        if all
            .iter()
            .any(|v| !v.is_finite() || !(0.0..=1.0).contains(v))
        {
            return Err("x, y, w and h must be between 0 and 1".into());
        }
        Ok(())
    }
}
