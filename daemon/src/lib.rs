//! ledgersync: provisions tenants, loads their data through stream mappings into the
//! canonical ledger, keeps aggregates current and serves reports over HTTP.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules.

pub mod access;
pub mod api;
pub mod cli;
pub mod connectors;
pub mod demo;
pub mod import;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod reports;
pub mod scheduler;
pub mod secrets;
pub mod sync;
pub mod tenants;
pub mod verify;

pub use api::Application;
