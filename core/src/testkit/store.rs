//! Conformance suite for the `store` seam.
