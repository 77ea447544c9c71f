//! Streams a CSV file as [`RowBatch`]es of at most `batch_rows` rows, so memory is
//! bounded by the batch, not the file. Header names are trimmed and lower-cased;
//! cells are trimmed. A row with the wrong number of fields is reported, not fatal.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::batch::{RowBatch, RowError};
use polars::prelude::{IntoColumn, StringChunkedBuilder};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path}: the file has no header row")]
    NoHeader { path: PathBuf },
    #[error("{path}: {source}")]
    Frame {
        path: PathBuf,
        source: polars::error::PolarsError,
    },
}

pub struct CsvBatches {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    columns: Vec<String>,
    batch_rows: usize,
    total_bytes: u64,
    record: csv::StringRecord,
    done: bool,
}

impl CsvBatches {
    pub fn open(path: &Path, batch_rows: usize) -> Result<CsvBatches, FileError> {
        let file = File::open(path).map_err(|source| FileError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        // Cells are trimmed as they are copied out: the csv crate's own trimming
        // builds a new record for every row.
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let csv_error = |source| FileError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let columns: Vec<String> = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase())
            .collect();
        if columns.iter().all(String::is_empty) {
            return Err(FileError::NoHeader {
                path: path.to_path_buf(),
            });
        }
        Ok(CsvBatches {
            path: path.to_path_buf(),
            reader,
            columns,
            batch_rows: batch_rows.max(1),
            total_bytes,
            record: csv::StringRecord::new(),
            done: false,
        })
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// File size, and bytes read so far, for progress reporting.
    pub fn progress(&self) -> (u64, u64) {
        (self.reader.position().byte(), self.total_bytes)
    }

    /// The next batch, or `None` at the end of the file.
    pub fn next_batch(&mut self) -> Result<Option<RowBatch>, FileError> {
        if self.done {
            return Ok(None);
        }
        let width = self.columns.len();
        // Cells go straight into polars' string builders: no string per cell.
        let capacity = self.batch_rows.min(65_536);
        let mut cells: Vec<StringChunkedBuilder> = self
            .columns
            .iter()
            .map(|name| StringChunkedBuilder::new(name.as_str().into(), capacity))
            .collect();
        let mut lines = Vec::with_capacity(capacity);
        let mut errors = Vec::new();
        while lines.len() < self.batch_rows {
            let more = self
                .reader
                .read_record(&mut self.record)
                .map_err(|source| FileError::Csv {
                    path: self.path.clone(),
                    source,
                })?;
            if !more {
                self.done = true;
                break;
            }
            let line = self.record.position().map(|p| p.line()).unwrap_or(0);
            if self.record.len() == 1 && self.record[0].trim().is_empty() {
                continue;
            }
            if self.record.len() != width {
                errors.push(RowError {
                    line,
                    reason: format!("expected {width} fields, found {}", self.record.len()),
                });
                continue;
            }
            for (builder, cell) in cells.iter_mut().zip(self.record.iter()) {
                let cell = cell.trim();
                if cell.is_empty() {
                    builder.append_null();
                } else {
                    builder.append_value(cell);
                }
            }
            lines.push(line);
        }
        if lines.is_empty() && errors.is_empty() {
            return Ok(None);
        }
        let columns = cells
            .into_iter()
            .map(|builder| builder.finish().into_column())
            .collect();
        RowBatch::from_columns(lines.len(), columns, lines, errors)
            .map(Some)
            .map_err(|source| FileError::Frame {
                path: self.path.clone(),
                source,
            })
    }
}
