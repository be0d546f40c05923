//! Benchmarks of Meridian's hot paths (`benches/hot_paths.rs`, criterion) and the fio suite
//! storage engineers run against a mount (`fio/`, with `fio/run.py`). See
//! docs/benchmarking.md.
