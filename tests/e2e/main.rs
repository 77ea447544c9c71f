//! End-to-end tests: the real store on SQLite files and on the PostgreSQL server at
//! `LS_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`), real
//! CSV files, real HTTP, and hledger as the independent judge of the numbers.

mod access;
mod api;
mod chart;
mod connectors;
mod connectors_api;
mod connectors_hledger;
mod helpers;
mod hledger;
mod import_files;
mod ledger;
mod money;
mod read_cache;
mod store_model;
mod store_story;
