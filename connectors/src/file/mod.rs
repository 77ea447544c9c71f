//! File sources: CSV read in bounded batches, directly ([`CsvBatches`]) or behind
//! the [`Source`] interface ([`FileSource`]).

mod csv_reader;
mod delimiters;
mod text_column;

pub use csv_reader::{CsvBatches, FileError};

use async_trait::async_trait;

use crate::source::{RowOrigin, Source, SourceBatch, SourceError, SourceErrorKind, SourceIdentity};

/// A CSV file behind the [`Source`] interface: read whole, in batches whose rows
/// are named by their line. Reading happens on a blocking thread, one batch per
/// call.
pub struct FileSource {
    identity: SourceIdentity,
    /// Away while a batch is being read.
    batches: Option<CsvBatches>,
    columns: Vec<String>,
    progress: (u64, u64),
}

impl FileSource {
    pub fn open(
        identity: SourceIdentity,
        path: &std::path::Path,
        batch_rows: usize,
    ) -> Result<FileSource, SourceError> {
        let batches = CsvBatches::open(path, batch_rows).map_err(file_error)?;
        Ok(FileSource {
            identity,
            columns: batches.columns().to_vec(),
            progress: batches.progress(),
            batches: Some(batches),
        })
    }
}

/// A file's failure: its content is the sender's to fix, the rest is the reader's.
fn file_error(error: FileError) -> SourceError {
    let kind = match error {
        FileError::Csv { .. } | FileError::NotUtf8 { .. } | FileError::NoHeader { .. } => {
            SourceErrorKind::Content
        }
        FileError::Open { .. } | FileError::Frame { .. } => SourceErrorKind::Other,
    };
    SourceError::caused_by(kind, error)
}

#[async_trait]
impl Source for FileSource {
    fn identity(&self) -> &SourceIdentity {
        &self.identity
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, SourceError> {
        let Some(mut batches) = self.batches.take() else {
            return Ok(None);
        };
        let (batches, read) = tokio::task::spawn_blocking(move || {
            let read = batches.next_batch();
            (batches, read)
        })
        .await
        .map_err(|e| {
            SourceError::new(
                SourceErrorKind::Other,
                format!("the file reader failed: {e}"),
            )
        })?;
        self.progress = batches.progress();
        match read.map_err(file_error)? {
            Some(rows) => {
                self.batches = Some(batches);
                Ok(Some(SourceBatch {
                    rows,
                    origin: RowOrigin::Lines,
                }))
            }
            None => Ok(None),
        }
    }

    fn cursor(&self) -> Option<String> {
        None
    }

    /// A file is one delivery of rows, not all the source holds: what it leaves
    /// out stays in the ledger.
    fn is_complete_read(&self) -> bool {
        false
    }

    fn columns(&self) -> Option<&[String]> {
        Some(&self.columns)
    }

    fn progress(&self) -> Option<(u64, u64)> {
        Some(self.progress)
    }
}
