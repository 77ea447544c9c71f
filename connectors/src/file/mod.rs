//! File sources: CSV read in bounded batches.

mod csv_reader;
mod delimiters;
mod text_column;

pub use csv_reader::{CsvBatches, FileError};
