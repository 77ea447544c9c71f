//! File sources: CSV read in bounded batches.

mod csv_reader;
mod text_column;

pub use csv_reader::{CsvBatches, FileError};
