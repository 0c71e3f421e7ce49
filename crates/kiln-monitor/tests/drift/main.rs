//! Kiln's drift against Evidently 0.7.23 itself: the fixtures under `tests/fixtures/drift/`
//! are Evidently's verdicts (and SciPy's special-function values) on cases designed for this,
//! produced by `tests/fixtures/drift/generate.py`. Every score must agree to a relative 1e-9,
//! with the same typing, method, threshold and verdict, and the same dataset figures.

mod cases;
mod fixtures;
mod special;
