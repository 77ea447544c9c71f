//! The HTTP API. A request proves who it is with a session (`Authorization: Bearer
//! lss_…` or the `ledgersync_session` cookie) or an API key (`Bearer lsk_…`); the
//! credential alone decides the tenant, and every route names what it needs in
//! [`ROUTES`], the one table the router and the OpenAPI document are built from.
//! Reports read only precomputed aggregates. Errors are RFC 9457 problem details
//! with a stable `type`.
//!
//! - [`state`]: what handlers share, the read cache, the server's lifecycle;
//! - [`routes`]: the table of routes and the router built from it;
//! - [`auth`]: credentials, the guard, login, invitations and sessions;
//! - [`problem`] and [`extract`]: problem documents and extractors that answer with one;
//! - one module per group of routes: [`reports`], [`settings`], [`imports`],
//!   [`users`], [`keys`], [`audit`], [`ledger`], [`connectors`];
//! - [`openapi`]: `GET /v1/openapi.json`, described from the table.

pub mod audit;
pub mod auth;
pub mod connectors;
pub mod extract;
pub mod imports;
pub mod keys;
pub mod ledger;
pub mod openapi;
pub mod problem;
pub mod reports;
pub mod routes;
pub mod settings;
pub mod state;
pub mod users;

pub use auth::{Caller, Principal};
pub use problem::Problem;
pub use routes::{router, Need, Route, ROUTES};
pub use state::{AppState, Application};
