//! Conformance suite for the `queue` seam.
