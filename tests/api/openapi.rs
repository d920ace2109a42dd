//! `GET /api/openapi.json`: the OpenAPI document names exactly the served routes (the route
//! table, `palaver::routes::ROUTES`), every `$ref` resolves, every body-reading route has a
//! schema, and what the server really answers fits what the document says.

use std::collections::BTreeSet;

use palaver::http::router::RouteInfo;
use palaver::routes::ROUTES;
use serde_json::Value;

use crate::common::{Backend, TestApp, spawn_app};

const METHODS: [&str; 8] = ["get", "put", "post", "patch", "delete", "head", "options", "trace"];

async fn fetch_document(app: &TestApp) -> Value {
    let document = app.get_public("/openapi.json").await.expect(200);
    let version = document["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi version {version:?}");
    document
}

/// `/channels/{channel_id}/members/{member_id}` and `/channels/{id}/members/{id}` → the same
/// shape, `/channels/{}/members/{}`.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|segment| if segment.starts_with('{') && segment.ends_with('}') { "{}" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

fn extractor_names(route: &RouteInfo) -> Vec<&'static str> {
    route.extractors.iter().map(|e| e.split('(').next().unwrap_or(e).trim()).collect()
}

/// The operation of `route` in the document (its path found by shape).
fn operation_of<'a>(document: &'a Value, route: &RouteInfo) -> &'a Value {
    let paths = document["paths"].as_object().expect("paths object");
    let (_, item) = paths
        .iter()
        .find(|(path, _)| shape(path) == shape(route.path))
        .unwrap_or_else(|| panic!("{} {} is not in the document", route.method, route.path));
    let operation = &item[route.method.to_ascii_lowercase()];
    assert!(operation.is_object(), "{} {} is not in the document", route.method, route.path);
    operation
}

/// Follows `{"$ref": "#/…"}` (once or more) to the object it names.
fn resolve<'a>(document: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {reference}"));
        value = document.pointer(pointer).unwrap_or_else(|| panic!("$ref {reference} does not resolve"));
    }
    value
}

async fn document_names_exactly_the_routes_of_the_table(backend: Backend) {
    let app = spawn_app(backend).await;
    let document = fetch_document(&app).await;

    let table: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.to_ascii_lowercase(), shape(r.path))).collect();
    assert_eq!(table.len(), ROUTES.len(), "two table lines have the same method and path shape");
    assert!(table.contains(&("get".into(), "/openapi.json".into())), "the document describes itself");

    let mut documented = BTreeSet::new();
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().expect("paths object") {
        for (method, _) in item.as_object().expect("path item object") {
            if METHODS.contains(&method.as_str()) {
                operations += 1;
                documented.insert((method.clone(), shape(path)));
            }
        }
    }
    let missing: Vec<_> = table.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&table).collect();
    assert!(missing.is_empty(), "routes missing from the document: {missing:?}");
    assert!(unknown.is_empty(), "documented routes that are not served: {unknown:?}");
    assert_eq!(operations, ROUTES.len(), "one operation per route");

    // Operation ids are unique (aliases of one handler get their own).
    let ids: BTreeSet<&str> = ROUTES
        .iter()
        .map(|r| operation_of(&document, r)["operationId"].as_str().expect("operationId"))
        .collect();
    assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");
    app.stop().await;
}

async fn every_ref_resolves_and_every_body_has_a_schema(backend: Backend) {
    let app = spawn_app(backend).await;
    let document = fetch_document(&app).await;

    // Every $ref anywhere in the document points at something in it.
    let mut stack = vec![&document];
    let mut references = 0;
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                    references += 1;
                    let pointer = reference.strip_prefix('#').unwrap_or(reference);
                    assert!(document.pointer(pointer).is_some(), "$ref {reference} does not resolve");
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(references > ROUTES.len(), "the document shares schemas and responses by $ref");

    for route in ROUTES {
        let operation = operation_of(&document, route);
        let extractors = extractor_names(route);
        let name = format!("{} {} ({})", route.method, route.path, route.handler);
        if extractors.contains(&"json") {
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            let described = resolve(&document, schema);
            assert!(
                described.get("type").is_some() || described.get("anyOf").is_some(),
                "{name}: the JSON body has no schema: {schema}"
            );
            assert_eq!(operation["requestBody"]["required"], true, "{name}");
            assert!(operation["responses"]["415"].is_object(), "{name}: 415 for a non-JSON body");
        }
        if ["upload", "multipart_form", "body_stream"].iter().any(|e| extractors.contains(e)) {
            let schema = &operation["requestBody"]["content"]["multipart/form-data"]["schema"];
            assert_eq!(schema["type"], "object", "{name}: the form body has no schema");
        }
        if !extractors
            .iter()
            .any(|e| ["json", "upload", "multipart_form", "body_stream", "raw_body"].contains(e))
        {
            assert!(operation.get("requestBody").is_none(), "{name}: reads no body");
        }

        // Bearer auth exactly where the line takes the caller.
        let bearer = operation["security"]
            .as_array()
            .expect("security list")
            .iter()
            .any(|s| s.get("bearer").is_some());
        let takes_caller = extractors.contains(&"auth") || extractors.contains(&"maybe_auth");
        assert_eq!(bearer, takes_caller, "{name}: bearer security");
        assert_eq!(operation["responses"]["401"].is_object(), takes_caller, "{name}: 401");

        // Path parameters: one per template placeholder, UUIDs where the table has `{id}`.
        let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
        let in_path: Vec<&Value> = parameters.iter().filter(|p| p["in"] == "path").collect();
        let placeholders: Vec<&str> = route.path.split('/').filter(|s| s.starts_with('{')).collect();
        assert_eq!(in_path.len(), placeholders.len(), "{name}: path parameters");
        for (parameter, placeholder) in in_path.iter().zip(&placeholders) {
            let uuid = parameter["schema"]["format"] == "uuid";
            assert_eq!(uuid, *placeholder == "{id}", "{name}: {parameter}");
            assert_eq!(parameter["required"], true, "{name}");
        }

        // The generic errors every route can answer, all with the one error body.
        for status in ["404", "429", "500", "503"] {
            let response = resolve(&document, &operation["responses"][status]);
            let schema = &response["content"]["application/json"]["schema"];
            assert_eq!(schema["$ref"], "#/components/schemas/Error", "{name}: {status}");
        }
    }
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    app.stop().await;
}

/// Every property the server sent is described, and every required one was sent.
fn assert_fits(document: &Value, schema: &Value, body: &Value, what: &str) {
    let schema = resolve(document, schema);
    let properties = schema["properties"].as_object().unwrap_or_else(|| panic!("{what}: no properties"));
    let body = body.as_object().unwrap_or_else(|| panic!("{what}: not an object"));
    for key in body.keys() {
        assert!(properties.contains_key(key), "{what}: `{key}` is sent but not described");
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        assert!(body.contains_key(key), "{what}: `{key}` is required but not sent");
    }
}

async fn real_answers_fit_the_described_bodies(backend: Backend) {
    let app = spawn_app(backend).await;
    let document = fetch_document(&app).await;
    let route = |method: &str, path: &str| {
        ROUTES.iter().find(|r| r.method == method && r.path == path).copied().expect("route in table")
    };
    let success = |route: RouteInfo| {
        operation_of(&document, &route)["responses"]["200"]["content"]["application/json"]["schema"].clone()
    };

    let user = app.register("openapi_alice").await;
    let me = app.get("/account/me", &user.token).await.expect(200);
    assert_fits(&document, &success(route("GET", "/account/me")), &me, "GET /account/me");
    let health = app.get_public("/health").await.expect(200);
    assert_fits(&document, &success(route("GET", "/health")), &health, "GET /health");
    let channel = app
        .post("/channels", &user.token, serde_json::json!({"name": "openapi", "channel_type": "text"}))
        .await
        .expect(200);
    assert_fits(&document, &success(route("POST", "/channels")), &channel, "POST /channels");
    let request = &operation_of(&document, &route("POST", "/channels"))["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_fits(
        &document,
        request,
        &serde_json::json!({"name": "openapi", "channel_type": "text"}),
        "POST /channels request",
    );

    // A real error fits the shared error schema, with a code it lists.
    let error_schema = &document["components"]["schemas"]["Error"];
    let unauthorized = app.get_public("/account/me").await;
    let body = unauthorized.body.clone();
    assert_eq!(unauthorized.expect_error(401), "unauthorized");
    assert_fits(&document, error_schema, &body, "401 body");
    let codes = error_schema["properties"]["code"]["enum"].as_array().expect("code enum");
    assert!(codes.contains(&body["code"]), "code {} is listed", body["code"]);
    let not_found = app.get("/channels/00000000-0000-0000-0000-000000000000", &user.token).await;
    let body = not_found.body.clone();
    assert_eq!(not_found.expect_error(404), "not_found");
    assert_fits(&document, error_schema, &body, "404 body");
    app.stop().await;
}

crate::both_backends!(
    document_names_exactly_the_routes_of_the_table,
    every_ref_resolves_and_every_body_has_a_schema,
    real_answers_fit_the_described_bodies,
);
