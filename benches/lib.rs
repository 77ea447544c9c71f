//! Benchmarks run side by side with peer tools by `benches/run.sh`; results and the
//! command that reproduces them are in `BENCHMARKS.md`. The `trivial_axum` binary is
//! the HTTP baseline.
