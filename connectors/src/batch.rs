//! The unit sources hand to the mapper.

pub use ledgersync_schemas::RowError;
use polars::prelude::*;

/// Up to a batch's worth of source rows as text columns (`None` for empty cells),
/// with the origin line of each row and the rows the reader itself could not read.
/// A database read may hand the columns named in `ReadRequest::instant_columns`
/// over as `Datetime(µs, UTC)` instead.
#[derive(Debug, Clone)]
pub struct RowBatch {
    pub frame: DataFrame,
    pub origin_lines: Vec<u64>,
    pub errors: Vec<RowError>,
}

impl RowBatch {
    /// Builds a batch from column names and rows of cells; empty cells become nulls.
    pub fn from_rows(
        columns: &[String],
        rows: Vec<Vec<String>>,
        origin_lines: Vec<u64>,
        errors: Vec<RowError>,
    ) -> PolarsResult<RowBatch> {
        let height = rows.len();
        let mut cells: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(height); columns.len()];
        for row in rows {
            for (index, cell) in row.into_iter().enumerate() {
                cells[index].push((!cell.is_empty()).then_some(cell));
            }
        }
        let frame = DataFrame::new(
            height,
            columns
                .iter()
                .zip(cells)
                .map(|(name, values)| Column::new(name.as_str().into(), values))
                .collect(),
        )?;
        Ok(RowBatch {
            frame,
            origin_lines,
            errors,
        })
    }

    /// Builds a batch from text columns of `height` rows.
    pub fn from_columns(
        height: usize,
        columns: Vec<Column>,
        origin_lines: Vec<u64>,
        errors: Vec<RowError>,
    ) -> PolarsResult<RowBatch> {
        Ok(RowBatch {
            frame: DataFrame::new(height, columns)?,
            origin_lines,
            errors,
        })
    }

    pub fn len(&self) -> usize {
        self.origin_lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origin_lines.is_empty()
    }
}

/// One column of a batch a database read is filling.
pub(crate) enum CellColumn {
    Text(StringChunkedBuilder),
    /// Microseconds since 1970, UTC: no text written here, none parsed in the
    /// mapping.
    Instants(PrimitiveChunkedBuilder<Int64Type>),
    /// Mantissas at [`DECIMAL_SCALE`]: amounts the mapping reads without parsing
    /// text.
    Decimals(PrimitiveChunkedBuilder<Int128Type>),
}

/// Mantissas are at the precision and scale the mapping reads numeric text at, so
/// that it takes the column as it is.
const DECIMAL_PRECISION: usize = crate::mapping::SOURCE_PRECISION;
pub(crate) const DECIMAL_SCALE: usize = crate::mapping::SOURCE_SCALE;

/// What a database read hands a column over as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellKind {
    Text,
    Instants,
    Decimals,
}

impl CellColumn {
    pub(crate) fn new(name: &str, capacity: usize, kind: CellKind) -> CellColumn {
        match kind {
            CellKind::Text => CellColumn::Text(StringChunkedBuilder::new(name.into(), capacity)),
            CellKind::Instants => {
                CellColumn::Instants(PrimitiveChunkedBuilder::new(name.into(), capacity))
            }
            CellKind::Decimals => {
                CellColumn::Decimals(PrimitiveChunkedBuilder::new(name.into(), capacity))
            }
        }
    }

    pub(crate) fn finish(self) -> Column {
        match self {
            CellColumn::Text(builder) => builder.finish().into_column(),
            CellColumn::Instants(builder) => builder
                .finish()
                .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
                .into_column(),
            CellColumn::Decimals(builder) => builder
                .finish()
                .into_decimal_unchecked(DECIMAL_PRECISION, DECIMAL_SCALE)
                .into_column(),
        }
    }
}
