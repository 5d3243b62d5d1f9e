//! The web playground at `/`: one page (HTML, CSS, JS) that chats with this server and shows
//! block diffusion decode step by step.
//!
//! The assets live in `crates/server/assets/playground/` and are compiled into the binary, so
//! the page needs no network, no CDN and no build step. The page talks only to this server's own
//! API (`/v1/models`, `/v1/chat/completions` with the `include_steps` step trace, `/health`,
//! `/metrics`); these routes are outside the API-key check, so the page loads without a key and
//! asks for one when the API answers 401. Every asset is sent with a strict Content Security
//! Policy: scripts, styles and connections from this origin only.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../assets/playground/index.html");
const STYLE_CSS: &str = include_str!("../assets/playground/playground.css");
const SCRIPT_JS: &str = include_str!("../assets/playground/playground.js");
const ICON_SVG: &str = include_str!("../assets/playground/icon.svg");

/// Same origin only; no inline scripts, no frames, no form posts elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The playground's routes: `/` and its assets under `/playground/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route(
            "/playground/playground.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/playground/playground.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT_JS) }),
        )
        .route(
            "/playground/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Small files: always revalidate, so a new binary's page is never mixed with old JS.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
