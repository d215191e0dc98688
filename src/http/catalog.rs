//! `GET /api/locations/{id}/catalog`: a location's services and prices for staff, with where the
//! catalog came from (redis, memory, db, crm) and how old it is. Authenticated like every staff
//! route and tenant-scoped: another tenant's location is answered 404, like an unknown one. When
//! no true prices can be had the answer is 503 saying so, never a made-up price list.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use leadorch_actors::catalog::{CatalogItem, CatalogRead, CatalogSource};
use leadorch_actors::domain::LocationId;
use serde::Serialize;
use serde_json::json;

use super::staff::StaffAuth;
use super::{ApiError, AppState};
use crate::catalog::CatalogError;

/// How long a client should wait before asking again for an unavailable catalog.
const RETRY_AFTER_SECS: &str = "30";

/// Builds the catalog route; the caller adds the state and the layers.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/locations/{id}/catalog", get(get_catalog))
}

/// A location's catalog as the API shows it.
#[derive(Debug, Serialize)]
struct CatalogBody {
    location_id: LocationId,
    source: CatalogSource,
    /// Whole seconds since the prices were fetched from the CRM.
    age_secs: i64,
    /// Older than the TTL (served while it refreshes, or the last good copy).
    stale: bool,
    fetched_at: Timestamp,
    services: Vec<ServiceBody>,
}

/// One service with its price in cents and as dollars ("$1,234.00").
#[derive(Debug, Serialize)]
struct ServiceBody {
    service_id: String,
    name: String,
    price_cents: i64,
    price: String,
    bookable: bool,
    /// The price is a staff override, not the CRM's.
    overridden: bool,
}

impl From<CatalogItem> for ServiceBody {
    fn from(item: CatalogItem) -> Self {
        ServiceBody {
            price_cents: item.price.cents(),
            price: item.price.to_string(),
            service_id: item.service_id,
            name: item.name,
            bookable: item.bookable,
            overridden: item.overridden,
        }
    }
}

impl From<CatalogRead> for CatalogBody {
    fn from(read: CatalogRead) -> Self {
        CatalogBody {
            location_id: read.catalog.location_id,
            source: read.source,
            age_secs: read.age.as_secs(),
            stale: read.stale,
            fetched_at: read.catalog.fetched_at,
            services: read.catalog.items.into_iter().map(ServiceBody::from).collect(),
        }
    }
}

/// How a failed catalog read is answered.
#[derive(Debug)]
enum CatalogFailure {
    Api(ApiError),
    Unavailable,
}

impl IntoResponse for CatalogFailure {
    fn into_response(self) -> Response {
        match self {
            CatalogFailure::Api(err) => err.into_response(),
            CatalogFailure::Unavailable => {
                let body = json!({
                    "error": "catalog unavailable: no cached or stored prices for this location and the crm is not answering; try again later"
                });
                let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
                response
            }
        }
    }
}

/// GET /api/locations/{id}/catalog
async fn get_catalog(
    StaffAuth(key): StaffAuth,
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Json<CatalogBody>, CatalogFailure> {
    // Anything that is not a location id is a location that does not exist.
    let location_id = raw_id.parse::<LocationId>().map_err(|_| CatalogFailure::Api(ApiError::NotFound))?;
    match state.catalog.get(key.tenant_id, location_id).await {
        Ok(read) => Ok(Json(CatalogBody::from(read))),
        Err(CatalogError::NotFound) => Err(CatalogFailure::Api(ApiError::NotFound)),
        Err(CatalogError::Unavailable) => Err(CatalogFailure::Unavailable),
    }
}
