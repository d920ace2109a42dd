//! The route-table macro: one line per route expands into its warp filter chain and into
//! an entry of the static route list (method, path template, handler name).
//!
//! A line reads `get ("channels" / PathId / "members") => channels::list_members [auth, query]`:
//! the method, the `warp::path!` segments, the handler, and the extractors (functions of
//! `crate::http::extract`, called with the state and any arguments written in parentheses).
//! The handler receives the path values, then the state, then each extractor's value in the
//! order listed. Lines are tried in order, so a literal segment must precede a `PathId` in the
//! same position. Each route is boxed and the table is joined as a balanced tree of `or`s, so
//! types (and compile times) stay small and a request tries routes without deep nesting.

use warp::Filter;

use super::Route;

/// One entry of the route list: what metrics labels and API-completeness tests read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteInfo {
    /// `GET`, `POST`, … (upper case).
    pub method: &'static str,
    /// The path under `/api`, with `{id}` for a `PathId` and `{name}` for a `String` segment.
    pub path: &'static str,
    /// The handler, as written in the table (`channels::kick_member`).
    pub handler: &'static str,
    /// The extractors of the line as written (`auth`, `json`, `header("range")`, …): what the
    /// OpenAPI document derives security, parameters and request bodies from.
    pub extractors: &'static [&'static str],
}

/// Put on every response a table route answered (refusals by its extractors included), so
/// the front door can count requests by route template (`crate::metrics`).
#[derive(Clone, Copy, Debug)]
pub struct MatchedRoute(pub &'static RouteInfo);

/// Joins routes so that earlier ones are tried first, as a balanced tree (depth log2 n).
pub fn join(mut routes: Vec<Route>) -> Route {
    while routes.len() > 1 {
        let mut next = Vec::with_capacity(routes.len().div_ceil(2));
        let mut pairs = routes.into_iter();
        while let Some(first) = pairs.next() {
            next.push(match pairs.next() {
                Some(second) => first.or(second).unify().boxed(),
                None => first,
            });
        }
        routes = next;
    }
    match routes.pop() {
        Some(route) => route,
        // An empty table matches nothing.
        None => warp::any().and_then(|| async { Err(warp::reject::not_found()) }).boxed(),
    }
}

/// `"x"` → `x`, a `PathId` → `{id}`, another type (`String`) → `{name}`.
#[macro_export]
#[doc(hidden)]
macro_rules! route_segment {
    ($literal:literal) => {
        $literal
    };
    (PathId) => {
        "{id}"
    };
    ($other:ty) => {
        "{name}"
    };
}

/// `get` → `"GET"` …
#[macro_export]
#[doc(hidden)]
macro_rules! route_method {
    (get) => {
        "GET"
    };
    (post) => {
        "POST"
    };
    (put) => {
        "PUT"
    };
    (patch) => {
        "PATCH"
    };
    (delete) => {
        "DELETE"
    };
}

/// One table line → the boxed filter answering it.
#[macro_export]
#[doc(hidden)]
macro_rules! route_filter {
    ($state:ident, $method:ident ($($segment:tt)/+) => $handler:path
        [$($extractor:ident $(($($argument:expr),*))?),*]) => {{
        use warp::Filter as _;
        #[allow(unused_imports)]
        use $crate::http::PathId;
        warp::path!($($segment)/+)
            .and(warp::$method())
            .and($crate::http::extract::state($state))
            $(.and($crate::http::extract::$extractor($state $($(, $argument)*)?)))*
            .then($handler)
            .map($crate::http::respond)
            .recover($crate::http::extract::answer_refusal)
            .unify()
            .map(|mut response: warp::reply::Response| {
                static ROUTE: $crate::http::router::RouteInfo = $crate::http::router::RouteInfo {
                    method: $crate::route_method!($method),
                    path: concat!($("/", $crate::route_segment!($segment)),+),
                    handler: stringify!($handler),
                    extractors: &[$(stringify!($extractor $(($($argument),*))?)),*],
                };
                response.extensions_mut().insert($crate::http::router::MatchedRoute(&ROUTE));
                response
            })
            .boxed()
    }};
}

/// The route table: groups of lines; expands to `fn routes(&AppState) -> Route` and
/// `const ROUTES: &[RouteInfo]`.
#[macro_export]
macro_rules! route_table {
    ($(
        $group:ident {
            $($method:ident ($($segment:tt)/+) => $first:ident $(:: $rest:ident)*
                [$($extractor:ident $(($($argument:expr),*))?),*]),* $(,)?
        }
    )*) => {
        /// Every route of the table, in the order they are tried.
        pub fn routes(state: &$crate::state::AppState) -> $crate::http::Route {
            $crate::http::router::join(vec![$(
                $crate::http::router::join(vec![$(
                    $crate::route_filter!(state, $method ($($segment)/+) => $first $(:: $rest)*
                        [$($extractor $(($($argument),*))?),*])
                ),*])
            ),*])
        }

        /// (method, path template, handler) of every route, in table order.
        pub const ROUTES: &[$crate::http::router::RouteInfo] = &[$($(
            $crate::http::router::RouteInfo {
                method: $crate::route_method!($method),
                path: concat!($("/", $crate::route_segment!($segment)),+),
                handler: concat!(stringify!($first) $(, "::", stringify!($rest))*),
                extractors: &[$(stringify!($extractor $(($($argument),*))?)),*],
            }
        ),*),*];
    };
}
