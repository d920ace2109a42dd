//! The OpenAPI 3.1 document served at `GET /api/openapi.json`.
//!
//! Paths, methods, path parameters, security and the generic error responses come from the
//! route table itself (`routes::ROUTES`, one entry per table line), so a route cannot be
//! missing from the document and the document cannot name a route that is not served.
//! Request and response bodies and query parameters come from `catalog.rs`, a table keyed by
//! handler name: schemas are derived (`schemars::JsonSchema`) from the very types the handlers
//! deserialize and serialize. What the catalog does not describe stays generic, and says so.

mod catalog;

use std::collections::HashMap;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::http::router::RouteInfo;

pub use catalog::{Body, Reply, Spec, spec_of};

/// The security scheme's name in `components.securitySchemes`.
const BEARER: &str = "bearer";

/// The document for `routes` (the served table in production; tests may pass another).
pub fn document(routes: &[RouteInfo]) -> Value {
    // OpenAPI 3.1 schemas are JSON Schema 2020-12; shared types land in components. Requests
    // are described as the server reads them, responses as it writes them (a field skipped when
    // empty is optional in a response, a field with a default is optional in a request).
    let settings = SchemaSettings::draft2020_12().with(|settings| {
        settings.definitions_path = "/components/schemas".into();
        settings.meta_schema = None;
    });
    let mut generators = Generators {
        requests: settings.clone().for_deserialize().into_generator(),
        responses: settings.for_serialize().into_generator(),
    };
    let mut paths = Map::new();
    let mut operation_ids: HashMap<&str, usize> = HashMap::new();
    for route in routes {
        let (template, path_parameters) = openapi_path(route.path);
        let seen = operation_ids.entry(route.handler).or_default();
        *seen += 1;
        let operation_id = match *seen {
            1 => route.handler.replace("::", "."),
            n => format!("{}.{n}", route.handler.replace("::", ".")),
        };
        let operation = operation(route, operation_id, path_parameters, &mut generators);
        let item = paths.entry(template).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(route.method.to_ascii_lowercase(), operation);
        }
    }
    let mut schemas = generators.responses.take_definitions(true);
    let renames = merge_request_schemas(&mut schemas, generators.requests.take_definitions(true));
    for item in paths.values_mut() {
        for operation in item.as_object_mut().into_iter().flat_map(|item| item.values_mut()) {
            if let Some(body) = operation.get_mut("requestBody") {
                rename_refs(body, &renames);
            }
        }
    }
    schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Palaver REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every REST route of this server, generated from its route table. \
                Paths are relative to the server URL below (`/api`). The WebSocket gateway \
                (`/ws`) is described in the wire documents, not here. Errors always have the \
                body `{\"error\",\"code\",\"message\"}` (schema `Error`).",
            "license": { "name": "AGPL-3.0-only", "identifier": "AGPL-3.0-only" },
        },
        "servers": [{ "url": "/api" }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": error_responses(),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The access token from `POST /auth/login`, `/auth/register` or `/auth/refresh`.",
                },
            },
        },
    })
}

/// One generator per direction: the same type can differ as read and as written.
struct Generators {
    requests: SchemaGenerator,
    responses: SchemaGenerator,
}

/// Adds the request-side definitions to `schemas`. A type whose request view equals its
/// response view is kept once; one that differs is added as `<Name>Input`. Answers the
/// renames, to be applied to the request-side `$ref`s.
fn merge_request_schemas(
    schemas: &mut Map<String, Value>,
    requests: Map<String, Value>,
) -> HashMap<String, String> {
    let mut renames = HashMap::new();
    for (name, schema) in &requests {
        match schemas.get(name) {
            Some(existing) if existing == schema => {}
            Some(_) => {
                let mut renamed = format!("{name}Input");
                while schemas.contains_key(&renamed) || requests.contains_key(&renamed) {
                    renamed.push('_');
                }
                renames.insert(name.clone(), renamed);
            }
            None => {}
        }
    }
    for (name, mut schema) in requests {
        rename_refs(&mut schema, &renames);
        let name = renames.get(&name).cloned().unwrap_or(name);
        schemas.entry(name).or_insert(schema);
    }
    renames
}

/// Points every `$ref` to a renamed schema at its new name.
fn rename_refs(value: &mut Value, renames: &HashMap<String, String>) {
    if renames.is_empty() {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(new) =
                    reference.strip_prefix("#/components/schemas/").and_then(|name| renames.get(name))
            {
                *reference = format!("#/components/schemas/{new}");
            }
            map.values_mut().for_each(|v| rename_refs(v, renames));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, renames)),
        _ => {}
    }
}

/// The route's extractor names without their arguments (`header("range")` → `header`).
fn extractor_names(route: &RouteInfo) -> impl Iterator<Item = &'static str> {
    route.extractors.iter().map(|e| e.split('(').next().unwrap_or(e).trim())
}

/// The string arguments of every `name(...)` extractor (`header("range")` → `range`).
fn extractor_arguments(route: &RouteInfo, name: &str) -> Vec<String> {
    route
        .extractors
        .iter()
        .filter_map(|e| {
            let (head, rest) = e.split_once('(')?;
            (head.trim() == name).then(|| rest.trim_end_matches(')').trim().trim_matches('"').to_owned())
        })
        .collect()
}

/// A path parameter of the document: its name there and whether it is a UUID.
struct PathParameter {
    name: String,
    uuid: bool,
}

/// The table's template (`/channels/{id}/members/{id}/role`) as an OpenAPI path with distinct
/// parameter names (`/channels/{channel_id}/members/{member_id}/role`): OpenAPI requires them
/// unique. A parameter is named after the literal segment before it, made singular.
fn openapi_path(template: &str) -> (String, Vec<PathParameter>) {
    let mut out = String::new();
    let mut parameters: Vec<PathParameter> = Vec::new();
    let mut previous = "";
    for segment in template.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        let uuid = match segment {
            "{id}" => true,
            "{name}" => false,
            literal => {
                out.push_str(literal);
                previous = literal;
                continue;
            }
        };
        let stem = singular(previous).replace('-', "_");
        let base = if uuid { format!("{stem}_id") } else { format!("{stem}_key") };
        let mut name = base.clone();
        let mut n = 2;
        while parameters.iter().any(|p| p.name == name) {
            name = format!("{base}{n}");
            n += 1;
        }
        out.push('{');
        out.push_str(&name);
        out.push('}');
        parameters.push(PathParameter { name, uuid });
    }
    (out, parameters)
}

/// `communities` → `community`, `channels` → `channel`; other words unchanged.
fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = word.strip_suffix('s') {
        stem.to_owned()
    } else {
        word.to_owned()
    }
}

/// One operation object.
fn operation(
    route: &RouteInfo,
    operation_id: String,
    path_parameters: Vec<PathParameter>,
    generators: &mut Generators,
) -> Value {
    let spec = spec_of(route.handler);
    let extractors: Vec<&str> = extractor_names(route).collect();
    let has = |name: &str| extractors.contains(&name);

    let mut parameters: Vec<Value> = path_parameters
        .iter()
        .map(|p| {
            let schema =
                if p.uuid { json!({"type": "string", "format": "uuid"}) } else { json!({"type": "string"}) };
            json!({ "name": p.name, "in": "path", "required": true, "schema": schema })
        })
        .collect();
    for name in spec.query {
        let schema = match *name {
            "limit" | "offset" => json!({"type": "integer", "minimum": 0}),
            _ => json!({"type": "string"}),
        };
        parameters.push(json!({ "name": name, "in": "query", "required": false, "schema": schema }));
    }
    for header in extractor_arguments(route, "header") {
        // The body's content type is part of the request body, not a parameter.
        if !header.eq_ignore_ascii_case("content-type") {
            parameters.push(
                json!({ "name": header, "in": "header", "required": false, "schema": {"type": "string"} }),
            );
        }
    }

    let mut operation = Map::new();
    operation.insert("operationId".into(), json!(operation_id));
    operation.insert("summary".into(), json!(spec.summary.unwrap_or(route.handler)));
    let tag = route.handler.split("::").next().unwrap_or(route.handler);
    operation.insert("tags".into(), json!([tag]));
    if !parameters.is_empty() {
        operation.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = request_body(&extractors, &spec, &mut generators.requests) {
        operation.insert("requestBody".into(), body);
    }
    operation.insert("responses".into(), responses(route, &extractors, &spec, &mut generators.responses));
    // `maybe_auth` routes need the token too: their handler answers the 401 after its own
    // checks (e.g. a 404 first), so the order of errors differs, not the requirement.
    let security = if has("auth") || has("maybe_auth") { json!([{ BEARER: [] }]) } else { json!([]) };
    operation.insert("security".into(), security);
    Value::Object(operation)
}

/// The request body: JSON from the catalog's type, or a form / raw upload; `None` when the
/// route reads no body.
fn request_body(extractors: &[&str], spec: &Spec, generator: &mut SchemaGenerator) -> Option<Value> {
    if extractors.contains(&"json") {
        let schema = match spec.body {
            Some(Body::Json(schema_of)) => schema_of(generator).to_value(),
            // Not described (the catalog test fails on this): any JSON.
            _ => json!({}),
        };
        return Some(json!({
            "required": true,
            "content": { "application/json": { "schema": schema } },
        }));
    }
    let form = ["upload", "multipart_form", "body_stream"];
    if extractors.iter().any(|e| form.contains(e)) {
        let schema = match spec.body {
            Some(Body::Form(fields)) => {
                let properties: Map<String, Value> = fields
                    .iter()
                    .map(|(name, binary)| {
                        let schema = if *binary {
                            json!({"type": "string", "contentMediaType": "application/octet-stream"})
                        } else {
                            json!({"type": "string"})
                        };
                        ((*name).to_owned(), schema)
                    })
                    .collect();
                json!({ "type": "object", "properties": properties })
            }
            _ => json!({
                "type": "object",
                "description": "Form fields as the wire documents name them for this endpoint.",
            }),
        };
        return Some(json!({
            "required": true,
            "content": { "multipart/form-data": { "schema": schema } },
        }));
    }
    if extractors.contains(&"raw_body") {
        return Some(json!({
            "required": true,
            "content": { "application/octet-stream": { "schema": {} } },
        }));
    }
    None
}

/// The success response and the error responses this route can give.
fn responses(route: &RouteInfo, extractors: &[&str], spec: &Spec, generator: &mut SchemaGenerator) -> Value {
    let mut responses = Map::new();
    let success = match spec.reply {
        Reply::Json(schema_of) => json!({
            "description": "Success.",
            "content": { "application/json": { "schema": schema_of(generator).to_value() } },
        }),
        Reply::Empty => json!({ "description": "Success, with an empty body." }),
        Reply::Binary(media) => json!({
            "description": "The stored bytes.",
            "content": { media: { "schema": {} } },
        }),
        Reply::Undescribed => json!({
            "description": "Success. The body is not described in this document (see the wire documents).",
        }),
    };
    responses.insert(spec.status.to_string(), success);
    let has = |name: &str| extractors.contains(&name);
    let body = ["json", "upload", "multipart_form", "body_stream", "raw_body"].iter().any(|e| has(e));
    let input = body || has("query") || route.path.contains('{') || !spec.query.is_empty();
    let authenticated = has("auth") || has("maybe_auth");
    let writes = matches!(route.method, "POST" | "PUT" | "PATCH");
    let errors: [(&str, &str, bool); 10] = [
        ("400", "BadRequest", input),
        ("401", "Unauthorized", authenticated),
        ("403", "Forbidden", authenticated),
        ("404", "NotFound", true),
        ("409", "Conflict", writes),
        ("413", "PayloadTooLarge", body),
        ("415", "UnsupportedMediaType", has("json")),
        ("429", "TooManyRequests", true),
        ("500", "InternalError", true),
        ("503", "Unavailable", true),
    ];
    for (status, name, applies) in errors {
        if applies {
            responses.insert(status.into(), json!({ "$ref": format!("#/components/responses/{name}") }));
        }
    }
    Value::Object(responses)
}

/// The wire error body, shared by every error response.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error: `error` and `message` carry the same human-readable text; `code` is the kind to branch on.",
        "required": ["error", "code", "message"],
        "properties": {
            "error": { "type": "string" },
            "code": {
                "type": "string",
                "enum": [
                    "validation_error", "unauthorized", "forbidden", "not_found",
                    "method_not_allowed", "conflict", "payload_too_large",
                    "unsupported_media_type", "rate_limited", "unavailable", "internal_error",
                ],
            },
            "message": { "type": "string" },
        },
    })
}

/// `components.responses`: one per status, all with the `Error` body. They are generic: a
/// route lists a status when it can answer it in general (see `responses`), not per case.
fn error_responses() -> Value {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
        })
    };
    let mut too_many =
        error("Rate limited (`rate_limited`): the per-IP limiters; wait `Retry-After` seconds.");
    too_many["headers"] =
        json!({ "Retry-After": { "schema": { "type": "integer" }, "description": "Seconds to wait." } });
    let mut unavailable =
        error("`unavailable`: the database or another dependency is unreachable, or a bounded pool is full.");
    unavailable["headers"] = json!({ "Retry-After": { "schema": { "type": "integer" }, "description": "Seconds to wait, when known." } });
    json!({
        "BadRequest": error("`validation_error`: malformed input (body, query, a path id that is not a UUID) or a business rule refused it."),
        "Unauthorized": error("`unauthorized`: missing, invalid or expired bearer token, or wrong credentials."),
        "Forbidden": error("`forbidden`: the caller may not do this."),
        "NotFound": error("`not_found`: missing, or hidden from this caller."),
        "Conflict": error("`conflict`: a duplicate."),
        "PayloadTooLarge": error("`payload_too_large`: the body is over the limit."),
        "UnsupportedMediaType": error("`unsupported_media_type`: `Content-Type: application/json` expected."),
        "TooManyRequests": too_many,
        "InternalError": error("`internal_error`: logged by the server, never detailed."),
        "Unavailable": unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_get_distinct_names_from_their_segment() {
        let (path, parameters) = openapi_path("/communities/{id}/channels/{id}/timeout/{id}");
        assert_eq!(path, "/communities/{community_id}/channels/{channel_id}/timeout/{timeout_id}");
        assert!(parameters.iter().all(|p| p.uuid));
        let (path, parameters) = openapi_path("/polls/{id}/vote/{name}");
        assert_eq!(path, "/polls/{poll_id}/vote/{vote_key}");
        assert!(!parameters[1].uuid);
        assert_eq!(
            openapi_path("/group-invites/{name}/accept").0,
            "/group-invites/{group_invite_key}/accept"
        );
    }
}
