//! The OpenAI-compatible HTTP server (`dlm_server`, `dlm serve`).
//!
//! Requests flow one way: [`routes`] parses and validates a request ([`api`]), waits for a
//! decoding slot, and hands the prompt to the [`runner`], which decodes it on its own thread
//! through the engine's scheduler (concurrent requests share forward passes). Text comes back
//! as it becomes final and is sent as one JSON answer or as server-sent events. [`metrics`]
//! counts what happens, for `/metrics`. [`playground`] serves the web page at `/` that chats
//! with the server and shows block diffusion decode step by step.

mod answer;
pub mod api;
pub mod config;
pub mod conn;
pub mod error;
pub mod metrics;
pub mod playground;
pub mod routes;
pub mod runner;
mod sse;
pub mod trace;

pub use config::{default_model_path, DecodeArgs, ModeArg, ServeArgs};
pub use routes::{router, serve, AppState};

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
