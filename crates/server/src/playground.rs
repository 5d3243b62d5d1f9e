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
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use clap::Parser;
    use tower::ServiceExt;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: crate::ServeArgs,
    }

    /// The whole server's router behind an API key, with no model loaded.
    fn app() -> Router {
        let cli = Cli::parse_from(["dlm_server", "--api-key", "k"]);
        crate::router(crate::AppState::new(&cli.args), 1 << 20)
    }

    async fn get(app: &Router, path: &str) -> (StatusCode, String, String) {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map_or("", |v| v.to_str().unwrap_or(""))
            .to_string();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, ctype, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_page_and_every_asset_it_names_load_without_the_key() {
        let app = app();
        let (status, ctype, html) = get(&app, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "text/html; charset=utf-8");
        // Every same-origin path the page links to is served, with a fitting type.
        let mut linked = Vec::new();
        for attr in ["src=\"/", "href=\"/"] {
            for (at, _) in html.match_indices(attr) {
                let rest = &html[at + attr.len() - 1..];
                linked.push(rest[..rest.find('"').expect("closing quote")].to_string());
            }
        }
        linked.sort();
        assert_eq!(
            linked,
            [
                "/playground/icon.svg",
                "/playground/playground.css",
                "/playground/playground.js"
            ]
        );
        for path in &linked {
            let (status, ctype, body) = get(&app, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let ext = path.rsplit('.').next().expect("extension");
            let want = match ext {
                "js" => "text/javascript",
                "css" => "text/css",
                _ => "image/svg+xml",
            };
            assert!(ctype.starts_with(want), "{path}: {ctype}");
            assert!(!body.is_empty(), "{path}");
        }
        // The API itself still needs the key.
        let (status, _, body) = get(&app, "/v1/models").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    #[tokio::test]
    async fn assets_carry_a_same_origin_content_security_policy() {
        let resp = app()
            .oneshot(Request::get("/").body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(CSP.contains("default-src 'none'") && CSP.contains("connect-src 'self'"));
    }
}
