//! runtime: placeholder, filled in by its owner.
