//! What the benchmark binaries share: starting `annostore serve` beside them.

pub mod serve;
