//! Streams a CSV file as [`RowBatch`]es of at most `batch_rows` rows, so memory is
//! bounded by the batch, not the file. Header names are trimmed and lower-cased;
//! cells are trimmed. A row with the wrong number of fields is reported, not fatal.
//!
//! Most exports are plain: no quotes, `\n` or `\r\n` line ends. Such text is split
//! on its delimiters, found 64 bytes at a time (`super::delimiters`), a batch at a
//! time, which is several times cheaper than a general CSV parser. The first batch that is not plain (a quote, a
//! lone `\r`, bytes that are not UTF-8) hands the rest of the file to the csv
//! crate, which reads it as it would have from the start: same cells, same line
//! numbers, same errors. Lines end at `\n`; a lone `\r` ends lines only in a
//! file without any `\n` (classic Mac line ends).

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::delimiters::Delimiters;
use super::text_column::TextColumn;
use crate::batch::{RowBatch, RowError};

/// Bytes read from the file at a time while looking for a batch's lines.
const READ_BYTES: usize = 1 << 20;
/// Bytes of a chunk beyond which it is cut at its last line end, and handed to the
/// csv crate whole if it has none (a file with `\r` line ends, or one huge line).
const LONGEST_CHUNK: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{}:{line}: field {field} is not UTF-8 text; save the file as UTF-8", .path.display())]
    NotUtf8 {
        path: PathBuf,
        line: u64,
        field: usize,
    },
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
    columns: Vec<String>,
    batch_rows: usize,
    total_bytes: u64,
    source: Source,
}

enum Source {
    Plain(PlainLines),
    /// The csv crate, from the first batch that is not plain to the end of the file.
    Csv {
        reader: csv::Reader<Box<dyn Read + Send>>,
        record: csv::StringRecord,
        /// Lines and bytes of the file before the reader's first byte.
        lines_before: u64,
        bytes_before: u64,
    },
    Done,
}

/// The rest of a plain file, read in blocks into one buffer that is reused: `pending`
/// starts at a line start; its first `taken` bytes are the chunk last handed out.
struct PlainLines {
    file: File,
    pending: Vec<u8>,
    taken: usize,
    /// Line number of the next line to parse, counted from 1 at the file's start.
    line: u64,
    /// Bytes of the file before `pending`.
    offset: u64,
    at_end: bool,
}

/// Cells of one batch, built column by column.
struct BatchBuilder {
    cells: Vec<TextColumn>,
    lines: Vec<u64>,
    errors: Vec<RowError>,
}

impl BatchBuilder {
    fn new(columns: &[String], capacity: usize) -> BatchBuilder {
        BatchBuilder {
            cells: columns
                .iter()
                .map(|name| TextColumn::new(name, capacity))
                .collect(),
            lines: Vec::with_capacity(capacity),
            errors: Vec::new(),
        }
    }

    fn rows(&self) -> usize {
        self.lines.len()
    }

    /// Adds a row of untrimmed cells, slices of `text` if given; a row of one blank
    /// cell is a blank line.
    fn push<'a>(
        &mut self,
        line: u64,
        fields: impl ExactSizeIterator<Item = &'a str> + Clone,
        text: Option<&[u8]>,
    ) {
        let width = self.cells.len();
        let found = fields.len();
        if found == 1
            && fields
                .clone()
                .next()
                .is_some_and(|cell| cell.trim().is_empty())
        {
            return;
        }
        if found != width {
            self.errors.push(RowError {
                line,
                reason: format!("expected {width} fields, found {found}"),
            });
            return;
        }
        for (column, cell) in self.cells.iter_mut().zip(fields) {
            let cell = trimmed(cell);
            match (cell.is_empty(), text) {
                (true, _) => column.push_null(),
                (false, Some(text)) => column.push_within(cell, text),
                (false, None) => column.push(cell),
            }
        }
        self.lines.push(line);
    }

    fn finish(self) -> polars::error::PolarsResult<Option<RowBatch>> {
        if self.lines.is_empty() && self.errors.is_empty() {
            return Ok(None);
        }
        let columns = self.cells.into_iter().map(TextColumn::finish).collect();
        RowBatch::from_columns(self.lines.len(), columns, self.lines, self.errors).map(Some)
    }
}

impl CsvBatches {
    pub fn open(path: &Path, batch_rows: usize) -> Result<CsvBatches, FileError> {
        let open = || {
            File::open(path).map_err(|source| FileError::Open {
                path: path.to_path_buf(),
                source,
            })
        };
        let file = open()?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        // The header through the csv crate (it may be quoted); the rows from where
        // it ends.
        let mut header = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(BufReader::with_capacity(64 << 10, file));
        let columns: Vec<String> = header
            .headers()
            .map_err(|source| read_error(path, source, 0))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase())
            .collect();
        if columns.iter().all(String::is_empty) {
            return Err(FileError::NoHeader {
                path: path.to_path_buf(),
            });
        }
        let after_header = header.position().clone();
        let (mut offset, mut line) = (after_header.byte(), after_header.line());
        let mut file = open()?;
        let io_error = |source| FileError::Open {
            path: path.to_path_buf(),
            source,
        };
        file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
        // A header ended by `\r\n` leaves the csv crate before the `\n`: the rows
        // start after it, on the next line.
        let mut first = [0u8];
        let mut pending = Vec::new();
        if file.read(&mut first).map_err(io_error)? == 1 {
            if first[0] == b'\n' {
                offset += 1;
                line += 1;
            } else {
                pending.push(first[0]);
            }
        }
        Ok(CsvBatches {
            path: path.to_path_buf(),
            columns,
            batch_rows: batch_rows.max(1),
            total_bytes,
            source: Source::Plain(PlainLines {
                file,
                pending,
                taken: 0,
                line,
                offset,
                at_end: false,
            }),
        })
    }

    /// As [`CsvBatches::open`], reading every row with the csv crate (tests compare
    /// the two ways).
    #[cfg(test)]
    fn open_general(path: &Path, batch_rows: usize) -> Result<CsvBatches, FileError> {
        let mut batches = Self::open(path, batch_rows)?;
        if let Source::Plain(plain) = std::mem::replace(&mut batches.source, Source::Done) {
            batches.source = general(plain);
        }
        Ok(batches)
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Bytes read so far, and the file size, for progress reporting.
    pub fn progress(&self) -> (u64, u64) {
        let read = match &self.source {
            Source::Plain(plain) => plain.offset + plain.taken as u64,
            Source::Csv {
                reader,
                bytes_before,
                ..
            } => bytes_before + reader.position().byte(),
            Source::Done => self.total_bytes,
        };
        (read, self.total_bytes)
    }

    /// The next batch, or `None` at the end of the file.
    pub fn next_batch(&mut self) -> Result<Option<RowBatch>, FileError> {
        let capacity = self.batch_rows.min(65_536);
        let mut batch = BatchBuilder::new(&self.columns, capacity);
        let io_error = |path: &Path, source: std::io::Error| FileError::Csv {
            path: path.to_path_buf(),
            source: source.into(),
        };
        // Plain chunks until the batch is full (blank lines are no rows), the file
        // ends, or a chunk is not plain.
        let mut not_plain = false;
        if let Source::Plain(plain) = &mut self.source {
            loop {
                let wanted = self.batch_rows - batch.rows();
                let (cut, whole) = match wanted {
                    0 => break,
                    _ => plain
                        .next_chunk(wanted)
                        .map_err(|e| io_error(&self.path, e))?,
                };
                if cut == 0 {
                    break;
                }
                match plain_text(&plain.pending[..cut]).filter(|_| whole) {
                    Some(text) => add_rows(text, &mut plain.line, &mut batch),
                    None => {
                        not_plain = true;
                        break;
                    }
                }
            }
        }
        if not_plain {
            let Source::Plain(plain) = std::mem::replace(&mut self.source, Source::Done) else {
                unreachable!("only a plain source has chunks");
            };
            self.source = general(plain);
        }
        if let Source::Csv {
            reader,
            record,
            lines_before,
            ..
        } = &mut self.source
        {
            while batch.rows() < self.batch_rows {
                let more = reader
                    .read_record(record)
                    .map_err(|source| read_error(&self.path, source, *lines_before))?;
                if !more {
                    break;
                }
                let line = *lines_before + record.position().map(|p| p.line()).unwrap_or(0);
                let count = record.len();
                batch.push(
                    line,
                    Counted {
                        fields: record.iter(),
                        count,
                    },
                    None,
                );
            }
        }
        self.finish(batch)
    }

    fn finish(&mut self, batch: BatchBuilder) -> Result<Option<RowBatch>, FileError> {
        let finished = batch.finish().map_err(|source| FileError::Frame {
            path: self.path.clone(),
            source,
        })?;
        if finished.is_none() {
            self.source = Source::Done;
        }
        Ok(finished)
    }
}

/// A read error of the csv crate, whose positions count from where it started
/// reading: `lines_before` lines into the file.
fn read_error(path: &Path, source: csv::Error, lines_before: u64) -> FileError {
    if let csv::ErrorKind::Utf8 { pos, err } = source.kind() {
        return FileError::NotUtf8 {
            path: path.to_path_buf(),
            line: lines_before + pos.as_ref().map_or(1, |p| p.line()),
            field: err.field() + 1,
        };
    }
    FileError::Csv {
        path: path.to_path_buf(),
        source,
    }
}

/// The csv crate over the rest of a file, from the start of what the plain reader
/// holds and has not parsed (the chunk it last took was not plain).
fn general(plain: PlainLines) -> Source {
    let PlainLines {
        file,
        pending,
        line,
        offset,
        ..
    } = plain;
    let bytes_before = offset;
    // Lines end at `\n`, but in a file that has none and `\r` instead (classic Mac).
    let terminator = match (
        memchr::memchr(b'\n', &pending),
        memchr::memchr(b'\r', &pending),
    ) {
        (None, Some(_)) => csv::Terminator::CRLF,
        _ => csv::Terminator::Any(b'\n'),
    };
    let rest: Box<dyn Read + Send> =
        Box::new(Cursor::new(pending).chain(BufReader::with_capacity(READ_BYTES, file)));
    Source::Csv {
        // Records end at `\n` (a `\r` before it is trimmed with the cell): with the
        // `\r\n` terminator the csv crate dates each record of a CRLF file from the
        // line before.
        reader: csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .terminator(terminator)
            .from_reader(rest),
        record: csv::StringRecord::new(),
        // The csv crate counts lines from 1.
        lines_before: line - 1,
        bytes_before,
    }
}

/// The chunk as text if it is plain: UTF-8, no quotes, every `\r` ending a line.
fn plain_text(chunk: &[u8]) -> Option<&str> {
    if memchr::memchr(b'"', chunk).is_some() {
        return None;
    }
    let lone_return = memchr::memchr_iter(b'\r', chunk).any(|at| chunk.get(at + 1) != Some(&b'\n'));
    if lone_return {
        return None;
    }
    simdutf8::basic::from_utf8(chunk).ok()
}

impl PlainLines {
    /// Drops the chunk last handed out and takes the next: up to `rows` whole lines
    /// (the last line of the file may lack its `\n`) at the front of `pending`, of the
    /// length returned; `false` with bytes in which no line ends within
    /// [`LONGEST_CHUNK`].
    fn next_chunk(&mut self, rows: usize) -> std::io::Result<(usize, bool)> {
        self.pending.drain(..self.taken);
        self.offset += self.taken as u64;
        self.taken = 0;
        let mut scanned = 0;
        let mut found = 0;
        let mut last_end = 0;
        let (cut, whole) = loop {
            for at in Delimiters::new(b'\n', b'\n', &self.pending[scanned..]) {
                found += 1;
                last_end = scanned + at + 1;
                if found == rows {
                    break;
                }
            }
            if found == rows {
                break (last_end, true);
            }
            scanned = self.pending.len();
            if self.at_end {
                break (self.pending.len(), true);
            }
            if self.pending.len() >= LONGEST_CHUNK {
                match last_end {
                    0 => break (self.pending.len(), false),
                    _ => break (last_end, true),
                }
            }
            // Read into the buffer's spare room, which is not zeroed first.
            let read = (&mut self.file)
                .take(READ_BYTES as u64)
                .read_to_end(&mut self.pending)?;
            self.at_end = read == 0;
        };
        self.taken = cut;
        Ok((cut, whole))
    }
}

/// Adds the rows of a plain chunk, numbering its lines on from `line`: one SIMD scan
/// finds every delimiter of the chunk.
fn add_rows(text: &str, line: &mut u64, batch: &mut BatchBuilder) {
    let bytes = text.as_bytes();
    let mut fields: Vec<&str> = Vec::with_capacity(batch.cells.len() + 1);
    let mut start = 0;
    for at in Delimiters::new(b',', b'\n', bytes) {
        // SAFETY: `start` is 0 or one past an ASCII delimiter and `at` is an ASCII
        // delimiter's position, both within `text`: the slice is whole characters.
        // Checking each boundary again cost more than finding the delimiters.
        fields.push(unsafe { text.get_unchecked(start..at) });
        start = at + 1;
        if bytes[at] == b'\n' {
            end_row(text, &mut fields, line, batch);
        }
    }
    // The last line of a file without a newline at its end.
    if start < bytes.len() {
        fields.push(&text[start..]);
        end_row(text, &mut fields, line, batch);
    }
}

fn end_row(text: &str, fields: &mut Vec<&str>, line: &mut u64, batch: &mut BatchBuilder) {
    if let Some(last) = fields.last_mut() {
        *last = last.strip_suffix('\r').unwrap_or(last);
    }
    // An empty line is one blank field, which `push` skips as the csv crate does.
    batch.push(*line, fields.iter().copied(), Some(text.as_bytes()));
    fields.clear();
    *line += 1;
}

/// A cell without the whitespace around it. Most cells start and end with a
/// printable ASCII character and are taken as they are, without `trim`'s decoding
/// of characters at both ends.
fn trimmed(cell: &str) -> &str {
    let printable = |byte: &u8| (b'!'..=b'~').contains(byte);
    let bytes = cell.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) if printable(first) && printable(last) => cell,
        _ => cell.trim(),
    }
}

/// An iterator whose length was counted beforehand.
#[derive(Clone)]
struct Counted<I> {
    fields: I,
    count: usize,
}

impl<'a, I: Iterator<Item = &'a str>> Iterator for Counted<I> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let next = self.fields.next();
        if next.is_some() {
            self.count -= 1;
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.count, Some(self.count))
    }
}

impl<'a, I: Iterator<Item = &'a str>> ExactSizeIterator for Counted<I> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// (line, cells) of each row of a file, its row errors, and its size.
    type ReadAll = (Vec<(u64, Vec<Option<String>>)>, Vec<RowError>, u64);

    /// Every batch of a file.
    fn read_all(path: &Path, batch_rows: usize, general: bool) -> ReadAll {
        let mut batches = if general {
            CsvBatches::open_general(path, batch_rows).unwrap()
        } else {
            CsvBatches::open(path, batch_rows).unwrap()
        };
        let (mut rows, mut errors) = (Vec::new(), Vec::new());
        while let Some(batch) = batches.next_batch().unwrap() {
            assert!(batch.len() <= batch_rows);
            for (row, &line) in batch.origin_lines.iter().enumerate() {
                let cells = batch
                    .frame
                    .columns()
                    .iter()
                    .map(|c| c.str().unwrap().get(row).map(str::to_string))
                    .collect();
                rows.push((line, cells));
            }
            errors.extend(batch.errors);
        }
        let (read, total) = batches.progress();
        assert_eq!(read, total);
        (rows, errors, total)
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn cells_are_trimmed_as_str_trim_does() {
        for cell in [
            "",
            " ",
            "1010",
            " 1010",
            "1010 ",
            "\t-5.5\r",
            "\u{a0}Kemang\u{a0}",
            "é",
            "Café",
            "x",
            " x",
            "\u{3000}Jakarta",
            "a\u{2003}",
            "~!",
            "a b",
        ] {
            assert_eq!(trimmed(cell), cell.trim(), "{cell:?}");
        }
    }

    #[test]
    fn plain_and_general_reading_agree() {
        let texts = [
            // LF, a blank line, a blank-looking line, a ragged row, cells to trim
            // and to leave empty, no newline at the end.
            "date, txn_id ,amount\n2025-01-01,T1,5\n\n   \n2025-01-02,T2\n 2025-01-03 , T3 ,\n2025-01-04,T4,7",
            // CRLF and a BOM.
            "\u{feff}date,txn_id,amount\r\n2025-01-01,T1,5\r\n2025-01-02,T2,6\r\n",
            // Quotes from the third row on: the rest goes to the csv crate.
            "a,b\n1,2\n3,4\n\"5,5\",6\n7,\"8\n8\"\n9,10\n",
            // A lone carriage return, and CRLF with quotes.
            "a,b\n1,2\r3,4\n5,6\n",
            "a,b\r\n\"1\",2\r\n3,\"4\"\r\n\r\n5,6\r\n",
        ];
        for text in texts {
            let source = file(text);
            for batch_rows in [1, 2, 3, 100] {
                let plain = read_all(source.path(), batch_rows, false);
                let general = read_all(source.path(), batch_rows, true);
                assert_eq!(plain, general, "{text:?} in batches of {batch_rows}");
            }
        }
    }

    /// Bytes that are not UTF-8 are named by their file line and field, however
    /// much of the file the plain reader read before the csv crate took over.
    #[test]
    fn text_that_is_not_utf8_is_named_by_its_line() {
        let cases: [(&[u8], u64, usize); 4] = [
            (b"a,b\n\xff,2\n3,4\n", 2, 1),
            (b"a,b\n1,2\n3,4\n5,\xfe\n", 4, 2),
            (b"a,b\r\n1,2\r\n3,\"\xc3\x28\"\r\n", 3, 2),
            (b"\xff,b\n1,2\n", 1, 1),
        ];
        for (bytes, line, field) in cases {
            let mut source = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut source, bytes).unwrap();
            for (batch_rows, general) in [(1, false), (100, false), (1, true)] {
                let error = match CsvBatches::open(source.path(), batch_rows) {
                    Err(error) => error,
                    Ok(mut batches) => {
                        if general {
                            batches = CsvBatches::open_general(source.path(), batch_rows).unwrap();
                        }
                        loop {
                            match batches.next_batch() {
                                Ok(Some(_)) => continue,
                                Ok(None) => panic!("{bytes:?} read without an error"),
                                Err(error) => break error,
                            }
                        }
                    }
                };
                let expected = format!(
                    "{}:{line}: field {field} is not UTF-8 text; save the file as UTF-8",
                    source.path().display()
                );
                assert_eq!(
                    error.to_string(),
                    expected,
                    "{bytes:?} in batches of {batch_rows}"
                );
            }
        }
    }

    #[test]
    fn rows_keep_their_file_lines() {
        let source = file("a,b\n1,2\n\n3\n 4 , \n\"5\",6\n");
        let (rows, errors, _) = read_all(source.path(), 2, false);
        let expected = vec![
            (2, vec![Some("1".to_string()), Some("2".to_string())]),
            (5, vec![Some("4".to_string()), None]),
            (6, vec![Some("5".to_string()), Some("6".to_string())]),
        ];
        assert_eq!(rows, expected);
        assert_eq!(
            errors,
            vec![RowError {
                line: 4,
                reason: "expected 2 fields, found 1".into()
            }]
        );
    }

    #[test]
    fn classic_mac_line_ends_still_end_rows() {
        let source = file("a,b\r1,2\r3,4\r");
        let (rows, errors, _) = read_all(source.path(), 10, false);
        let cells: Vec<_> = rows.into_iter().map(|(_, cells)| cells).collect();
        let text = |s: &str| Some(s.to_string());
        assert_eq!(cells, [[text("1"), text("2")], [text("3"), text("4")]]);
        assert!(errors.is_empty());
    }

    #[test]
    fn quoted_crlf_rows_keep_their_file_lines_too() {
        let source = file("a,b\r\n\"1\",2\r\n\r\n\"3\n3\",4\r\n5,6\r\n");
        let (rows, errors, _) = read_all(source.path(), 10, false);
        let lines: Vec<u64> = rows.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 4, 6]);
        assert_eq!(rows[1].1[0].as_deref(), Some("3\n3"));
        assert_eq!(rows[2].1[1].as_deref(), Some("6"));
        assert!(errors.is_empty());
    }

    #[test]
    fn a_large_plain_file_is_read_in_bounded_batches() {
        let mut text = String::from("key,amount\n");
        for i in 0..5_000 {
            text.push_str(&format!("K{i:05},{i}.5\n"));
        }
        let source = file(&text);
        let mut batches = CsvBatches::open(source.path(), 1_000).unwrap();
        let mut lines = Vec::new();
        while let Some(batch) = batches.next_batch().unwrap() {
            assert_eq!(batch.len(), 1_000);
            let keys = batch.frame.column("key").unwrap().str().unwrap().clone();
            assert_eq!(keys.get(0), Some(format!("K{:05}", lines.len()).as_str()));
            lines.extend(batch.origin_lines);
        }
        assert_eq!(lines, (2..5_002).collect::<Vec<u64>>());
    }
}
