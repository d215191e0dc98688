//! The web pages: the customer chat at `/c/{token}` (the magic link in every SMS and email) and
//! the staff dashboard at `/dashboard`, with their scripts and styles embedded in the binary
//! and served from `/assets/{name}` with strong ETags (a page names its assets with a version
//! query, so they can be cached for a year).
//!
//! A valid link renders the chat page for its lead; an expired, tampered or revoked one renders
//! a friendly page that tells the customer how to reach the shop. Pages carry a strict Content
//! Security Policy (scripts and styles only from this origin) and send no referrer, so the
//! token in the URL never leaks to another site.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::{AutoEscape, Environment, context};
use sha2::{Digest, Sha256};

use super::AppState;
use super::chat::{LinkDenied, verify_link};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset { name: "chat.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../../web/chat.js") },
    Asset { name: "chat.css", content_type: "text/css; charset=utf-8", body: include_str!("../../web/chat.css") },
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/dashboard.js"),
    },
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../web/dashboard.css"),
    },
];

const CHAT_PAGE: &str = include_str!("../../web/chat.html");
const LINK_INVALID_PAGE: &str = include_str!("../../web/link-invalid.html");
const DASHBOARD_PAGE: &str = include_str!("../../web/dashboard.html");

const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const PLAIN_PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";

fn etag_of(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// ETags of the assets, and one version for all of them (it changes when any asset does).
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| ASSETS.iter().map(|a| etag_of(a.body)).collect());
static ASSET_VERSION: LazyLock<String> =
    LazyLock::new(|| etag_of(&ETAGS.concat()).trim_matches('"').chars().take(12).collect());

static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    // The templates are compiled into the binary; a unit test renders both.
    let _ = env.add_template("chat.html", CHAT_PAGE);
    let _ = env.add_template("link-invalid.html", LINK_INVALID_PAGE);
    env
});

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/c/{token}", get(chat_page))
        .route("/dashboard", get(dashboard_page))
        .route("/assets/{name}", get(asset))
}

fn page(status: StatusCode, html: String, csp: &'static str) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A personal page: never cached by a shared cache, never served stale from history.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn render(name: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
    PAGES.get_template(name)?.render(ctx)
}

fn invalid_link(reason: &str) -> Response {
    match render("link-invalid.html", context! { reason => reason }) {
        Ok(html) => page(StatusCode::UNAUTHORIZED, html, PLAIN_PAGE_CSP),
        Err(err) => {
            tracing::error!(error = %err, "link-invalid page failed to render");
            (StatusCode::UNAUTHORIZED, "This link is no longer valid.").into_response()
        }
    }
}

/// GET /c/{token}: the customer's chat page.
async fn chat_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let claims = match verify_link(&state, &token).await {
        Ok(claims) => claims,
        Err(LinkDenied::Expired) => return invalid_link("expired"),
        Err(LinkDenied::Invalid | LinkDenied::Revoked) => return invalid_link("invalid"),
        Err(LinkDenied::Store(err)) => return super::ApiError::from(err).into_response(),
    };
    let lead = match state.store.leads.get(claims.tenant_id, claims.lead_id).await {
        Ok(lead) => lead,
        Err(leadorch_actors::ports::StoreError::NotFound) => return invalid_link("invalid"),
        Err(err) => return super::ApiError::from(err).into_response(),
    };
    let location = match state.store.locations.get(claims.tenant_id, lead.location_id).await {
        Ok(location) => location,
        Err(err) => return super::ApiError::from(err).into_response(),
    };
    let ctx = context! {
        lead_id => lead.id.to_string(),
        location_name => location.name,
        location_phone => location.phone_opt.map(|p| p.as_str().to_owned()),
        first_name => lead.first_name_opt,
        asset_version => ASSET_VERSION.as_str(),
    };
    match render("chat.html", ctx) {
        Ok(html) => {
            metrics::counter!("leadorch_chat_page_views_total").increment(1);
            page(StatusCode::OK, html, PAGE_CSP)
        }
        Err(err) => {
            tracing::error!(error = %err, "chat page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// GET /dashboard: the staff dashboard (it asks for a staff API key and calls the staff API).
async fn dashboard_page() -> Response {
    let html = DASHBOARD_PAGE.replace("{{ asset_version }}", ASSET_VERSION.as_str());
    let mut response = page(StatusCode::OK, html, PAGE_CSP);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// GET /assets/{name}: an embedded script or stylesheet, with an ETag; `If-None-Match` → 304.
async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (asset, etag) = (&ASSETS[index], &ETAGS[index]);
    let etag_value = HeaderValue::from_str(etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let cache = HeaderValue::from_static("public, max-age=31536000, immutable");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|presented| presented.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)])
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_render_and_escape_what_they_show() {
        let html = render(
            "chat.html",
            context! {
                lead_id => "0190b6f4-0000-7000-8000-000000000000",
                location_name => "Tint <Co> & Sons",
                location_phone => "+15125550100",
                first_name => "<script>alert(1)</script>",
                asset_version => "abc",
            },
        )
        .expect("chat page renders");
        assert!(!html.contains("<script>alert(1)"), "user-controlled text is escaped");
        assert!(html.contains("Tint &lt;Co&gt; &amp; Sons"));
        assert!(html.contains("/assets/chat.js?v=abc"));
        for reason in ["expired", "invalid"] {
            let page = render("link-invalid.html", context! { reason => reason }).expect("renders");
            assert!(!page.contains("<script"), "the invalid-link page runs no script");
        }
    }

    #[test]
    fn asset_etags_are_stable_and_differ_per_file() {
        assert_eq!(ETAGS.len(), ASSETS.len());
        assert_eq!(etag_of("x"), etag_of("x"));
        let mut unique = ETAGS.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ASSETS.len());
    }
}
