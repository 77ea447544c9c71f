//! The baseline for the report endpoint benchmark: an axum handler that does nothing
//! but answer, on the same runtime setup as `ledgersync serve`.

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8091".into());
    let router = Router::new().route("/", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, router).await
}
