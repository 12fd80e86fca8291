//! Conformance suite for the `index` seam.
