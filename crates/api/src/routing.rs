//! Which handler answers a request. Patroni routes on the first path segment
//! (`do_<METHOD>_<segment>`, so `/patroni/x` is `/patroni`) and sends everything else to the
//! generic health logic, which matches substrings of the whole path. We do the same, except
//! that a path nothing recognises is a 404 instead of Patroni's 503.

use crate::health::HealthCheck;
use crate::manage::ManageEndpoint;
use axum::http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Get(GetEndpoint),
    /// Generic GET/HEAD/OPTIONS health logic.
    Health(HealthCheck),
    /// A management endpoint (`POST /restart`, `PATCH /config`, ...).
    Manage(ManageEndpoint),
    /// A Patroni management endpoint that pgherd does not serve (`POST /citus`, `/sigterm`).
    NotImplemented,
    /// A known path, but Patroni has no handler for this method on it.
    UnsupportedMethod,
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GetEndpoint {
    Patroni,
    Cluster,
    History,
    Config,
    Metrics,
    Liveness,
    Readiness,
    Failsafe,
}

impl GetEndpoint {
    fn from_segment(segment: &str) -> Option<GetEndpoint> {
        Some(match segment {
            "patroni" => GetEndpoint::Patroni,
            "cluster" => GetEndpoint::Cluster,
            "history" => GetEndpoint::History,
            "config" => GetEndpoint::Config,
            "metrics" => GetEndpoint::Metrics,
            "liveness" => GetEndpoint::Liveness,
            "readiness" => GetEndpoint::Readiness,
            "failsafe" => GetEndpoint::Failsafe,
            _ => return None,
        })
    }
}

/// Patroni's mutating handlers `(method, first segment)`.
const MANAGEMENT: &[(&str, &str)] = &[
    ("PATCH", "config"),
    ("PUT", "config"),
    ("POST", "reload"),
    ("POST", "restart"),
    ("POST", "reinitialize"),
    ("POST", "failover"),
    ("POST", "switchover"),
    ("POST", "failsafe"),
    ("POST", "citus"),
    ("POST", "sigterm"),
    ("DELETE", "restart"),
    ("DELETE", "switchover"),
];

/// `path` is the URI path without the query string.
pub(crate) fn resolve(method: &Method, path: &str) -> Route {
    let segment = first_segment(path);
    let get_endpoint = GetEndpoint::from_segment(segment);
    match *method {
        Method::GET => match get_endpoint {
            Some(endpoint) => Route::Get(endpoint),
            None => HealthCheck::classify(path).map_or(Route::NotFound, Route::Health),
        },
        // Patroni has no HEAD/OPTIONS handlers per segment: everything goes through the generic
        // health logic, so `HEAD /patroni` is a 503 ("anything else"), never a DCS read.
        Method::HEAD | Method::OPTIONS => HealthCheck::classify(path)
            .or(get_endpoint.map(|_| HealthCheck::Other))
            .map_or(Route::NotFound, Route::Health),
        _ => {
            let method = method.as_str();
            if let Some(endpoint) = ManageEndpoint::from_route(method, segment) {
                Route::Manage(endpoint)
            } else if MANAGEMENT.contains(&(method, segment)) {
                Route::NotImplemented
            } else if get_endpoint.is_some()
                || HealthCheck::classify(path).is_some()
                || MANAGEMENT.iter().any(|(_, s)| *s == segment)
            {
                Route::UnsupportedMethod
            } else {
                Route::NotFound
            }
        }
    }
}

/// `/patroni/x` -> `patroni`; `/` -> ``.
fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            (Method::GET, "/patroni", Route::Get(GetEndpoint::Patroni)),
            (Method::GET, "/patroni/x", Route::Get(GetEndpoint::Patroni)),
            (Method::GET, "/", Route::Health(HealthCheck::Primary)),
            (
                Method::GET,
                "/primary/",
                Route::Health(HealthCheck::Primary),
            ),
            (Method::GET, "/nope", Route::NotFound),
            (Method::GET, "/restart", Route::NotFound),
            (Method::HEAD, "/patroni", Route::Health(HealthCheck::Other)),
            (
                Method::OPTIONS,
                "/replica",
                Route::Health(HealthCheck::Replica),
            ),
            (Method::OPTIONS, "/nope", Route::NotFound),
            (
                Method::POST,
                "/restart",
                Route::Manage(ManageEndpoint::Restart),
            ),
            (
                Method::PATCH,
                "/config",
                Route::Manage(ManageEndpoint::PatchConfig),
            ),
            (
                Method::DELETE,
                "/switchover/",
                Route::Manage(ManageEndpoint::DeleteSwitchover),
            ),
            (
                Method::POST,
                "/failsafe",
                Route::Manage(ManageEndpoint::Failsafe),
            ),
            (Method::POST, "/citus", Route::NotImplemented),
            (Method::POST, "/patroni", Route::UnsupportedMethod),
            (Method::PUT, "/primary", Route::UnsupportedMethod),
            (Method::GET, "/config", Route::Get(GetEndpoint::Config)),
            (Method::PUT, "/restart", Route::UnsupportedMethod),
            (Method::POST, "/nope", Route::NotFound),
        ];
        for (method, path, want) in cases {
            assert_eq!(resolve(&method, path), want, "{method} {path}");
        }
    }
}
