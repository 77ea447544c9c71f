//! Sources and the mapping that turns their rows into canonical postings.
//!
//! Every source hands the mapper [`RowBatch`]es of text columns with the origin of
//! each row; the mapper, driven by a [`ledgersync_config::StreamDef`], evaluates
//! account choices and amount expressions with polars and emits postings or row
//! errors. Readers never interpret values, so a file, a database table and a pushed
//! record map identically.

pub mod batch;
pub mod file;
pub mod mapping;
pub mod mssql;
pub mod mysql;
pub mod postgres;
pub mod source;

pub use batch::{RowBatch, RowError};
pub use mapping::{AccountCodes, MapContext, MappedBatch, Mapper, MappingError};
pub use postgres::PostgresDatabase;
pub use source::{
    CanonicalType, ColumnInfo, ConnectionCheck, Database, ReadRequest, RowNames, RowOrigin, Source,
    SourceBatch, SourceError, SourceErrorKind, SourceIdentity, TableInfo,
};
