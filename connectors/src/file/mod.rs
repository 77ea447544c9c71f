//! File sources: CSV read in bounded batches.

mod csv_reader;

pub use csv_reader::{CsvBatches, FileError};
