//! The OpenAPI document describes what the service sends: one type per schema name, the error
//! answers of every operation, and real responses (each endpoint family, success and error)
//! that validate against the schema documented for their status.

use entities::users::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, VILLAGE, resident_id, spawn_app};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

#[test]
fn no_two_types_share_a_schema_name() {
    assert_eq!(outreach::http::schema_name_clashes(), Vec::<String>::new());
}

async fn document(app: &TestApp) -> Value {
    app.client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_operation_documents_its_error_answers_with_the_envelope() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let responses = operation["responses"].as_object().unwrap();
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let query = parameters.iter().any(|p| p["in"] == "query");
            let body = operation.get("requestBody");
            let json_body = body.is_some_and(|b| {
                b["content"]
                    .as_object()
                    .is_some_and(|c| c.keys().any(|k| k.starts_with("application/json")))
            });
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            let mut expected = Vec::new();
            if path.contains('{') || query || body.is_some() {
                expected.push("400");
            }
            if secured {
                expected.extend(["401", "403"]);
            }
            if path.contains('{') {
                expected.push("404");
            }
            if json_body {
                expected.push("415");
            }
            if query || body.is_some() {
                expected.push("422");
            }
            for status in expected {
                if !responses.contains_key(status) {
                    missing.push(format!("{method} {path}: {status}"));
                }
            }
            // Every 4xx described as JSON is the error envelope.
            for (status, response) in responses {
                if !status.starts_with('4') {
                    continue;
                }
                if let Some(schema) = response.pointer("/content/application~1json/schema")
                    && schema["$ref"] != "#/components/schemas/ErrorEnvelope"
                {
                    missing.push(format!("{method} {path}: {status} is not the envelope"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
}

/// Checks `value` against `schema` (the subset utoipa emits: `$ref`, `type` (one or a list),
/// `nullable`, `enum`, `properties`, `required`, `additionalProperties`, `items`, `oneOf`,
/// `anyOf`, `allOf`); a property the schema does not list is an error unless
/// `additionalProperties` allows it.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        match doc["components"]["schemas"].get(name) {
            Some(target) => validate(doc, target, value, at, errors),
            None => errors.push(format!("{at}: unknown schema {reference}")),
        }
        return;
    }
    if let Some(all) = schema["allOf"].as_array() {
        // The parts together describe one object: their properties are all documented.
        let mut merged = json!({"type": "object", "properties": {}, "required": []});
        for part in all {
            let mut part = part.clone();
            while let Some(reference) = part["$ref"].as_str() {
                let name = reference.trim_start_matches("#/components/schemas/");
                part = doc["components"]["schemas"][name].clone();
            }
            if let Some(properties) = part["properties"].as_object() {
                merged["properties"]
                    .as_object_mut()
                    .unwrap()
                    .extend(properties.clone());
            }
            if let Some(required) = part["required"].as_array() {
                merged["required"]
                    .as_array_mut()
                    .unwrap()
                    .extend(required.iter().cloned());
            }
        }
        validate(doc, &merged, value, at, errors);
        return;
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alternatives) = schema[key].as_array() {
            let fits = alternatives.iter().any(|alt| {
                let mut mine = Vec::new();
                validate(doc, alt, value, at, &mut mine);
                mine.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: {value} fits none of {key} {schema}"));
            }
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if value.is_null() {
        let allowed = types.is_empty() || types.contains(&"null") || schema["nullable"] == true;
        if !allowed {
            errors.push(format!("{at}: null where {types:?} is documented"));
        }
        return;
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if !types.is_empty() {
        let fits = types.iter().any(|t| match *t {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        });
        if !fits {
            errors.push(format!("{at}: {value} is not {types:?}"));
            return;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        if let Some(required) = schema["required"].as_array() {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    errors.push(format!("{at}: required `{name}` missing"));
                }
            }
        }
        for (name, field) in object {
            let here = format!("{at}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(property) => validate(doc, property, field, &here, errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{here}: not documented")),
                    Value::Object(extra) => {
                        validate(doc, &Value::Object(extra.clone()), field, &here, errors)
                    }
                    Value::Bool(true) => {}
                    // No list of properties at all: a free-form object.
                    _ if properties.is_none() => {}
                    _ => errors.push(format!("{here}: not documented")),
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

struct Checker<'a> {
    app: &'a TestApp,
    doc: Value,
    errors: Vec<String>,
    /// Endpoint families seen, as the first segment after `/api/v1`.
    families: std::collections::BTreeSet<String>,
}

enum Body {
    None,
    Json(Value),
    Raw(&'static str, &'static str),
}

impl Checker<'_> {
    /// Makes the request, checks the status is documented for the operation and the JSON body
    /// validates against the schema documented for it; returns the status and the body.
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
    ) -> (u16, Value) {
        let mut request = self.app.client.request(method.clone(), self.app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(content_type, text) => {
                request.header("content-type", content_type).body(text)
            }
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.unwrap();
        let value: Value = if content_type.starts_with("application/json") {
            serde_json::from_slice(&bytes).unwrap()
        } else {
            Value::Null
        };
        let at = format!("{method} {path} → {status}");
        self.families.insert(
            template
                .trim_start_matches("/api/v1")
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
        let method = method.as_str().to_lowercase();
        let Some(operation) = self.doc["paths"][template].get(&method).cloned() else {
            self.errors
                .push(format!("{at}: {method} {template} is not documented"));
            return (status, value);
        };
        let Some(documented) = operation["responses"].get(status.to_string()) else {
            self.errors.push(format!("{at}: status not documented"));
            return (status, value);
        };
        if content_type.starts_with("application/json") {
            match documented.pointer("/content/application~1json/schema") {
                Some(schema) => {
                    let schema = schema.clone();
                    validate(&self.doc, &schema, &value, &at, &mut self.errors);
                }
                None => self
                    .errors
                    .push(format!("{at}: JSON body, none documented")),
            }
        }
        (status, value)
    }
}

#[tokio::test]
async fn real_responses_match_the_documented_schemas() {
    let app = spawn_app().await;
    app.seed_areas().await;
    let office = app.office_token().await;
    let (cadre_id, cadre) = app.user("cadre.doc", Role::Cadre, VILLAGE).await;
    let (_, auditor) = app.user("auditor.doc", Role::Auditor, VILLAGE).await;
    let institution = app
        .institution("DOC-1", crate::helpers::TOWNSHIP, &[VILLAGE], 40)
        .await;
    let doc = document(&app).await;
    let mut c = Checker {
        app: &app,
        doc,
        errors: Vec::new(),
        families: Default::default(),
    };
    let (o, k, a) = (
        Some(office.as_str()),
        Some(cadre.as_str()),
        Some(auditor.as_str()),
    );
    use Method as M;

    // System and sign-in.
    c.call(M::GET, "/healthz", "/healthz", None, Body::None)
        .await;
    let login = "/api/v1/auth/login";
    let wrong = json!({"username": "cadre.doc", "password": "not-the-password"});
    c.call(M::POST, login, login, None, Body::Json(wrong)).await;
    let right = json!({"username": "cadre.doc", "password": crate::helpers::PASSWORD});
    c.call(M::POST, login, login, None, Body::Json(right)).await;
    c.call(
        M::POST,
        login,
        login,
        None,
        Body::Raw("application/json", "{"),
    )
    .await;
    c.call(M::POST, login, login, None, Body::Raw("text/plain", "x"))
        .await;
    c.call(M::GET, "/api/v1/me", "/api/v1/me", k, Body::None)
        .await;
    c.call(M::GET, "/api/v1/me", "/api/v1/me", None, Body::None)
        .await;

    // Areas, users, audit.
    c.call(M::GET, "/api/v1/areas", "/api/v1/areas", k, Body::None)
        .await;
    let area = "/api/v1/areas/{code}";
    c.call(
        M::GET,
        area,
        &format!("/api/v1/areas/{VILLAGE}"),
        k,
        Body::None,
    )
    .await;
    c.call(M::GET, area, "/api/v1/areas/65402510020X", k, Body::None)
        .await;
    c.call(M::GET, "/api/v1/users", "/api/v1/users", o, Body::None)
        .await;
    c.call(M::GET, "/api/v1/users", "/api/v1/users", k, Body::None)
        .await;
    let user = "/api/v1/users/{id}";
    c.call(
        M::GET,
        user,
        &format!("/api/v1/users/{cadre_id}"),
        o,
        Body::None,
    )
    .await;
    c.call(M::GET, user, "/api/v1/users/999999", o, Body::None)
        .await;
    c.call(M::GET, "/api/v1/audit", "/api/v1/audit", o, Body::None)
        .await;
    c.call(
        M::GET,
        "/api/v1/audit",
        "/api/v1/audit?since=yesterday",
        o,
        Body::None,
    )
    .await;

    // Residents.
    let residents = "/api/v1/residents";
    let new = json!({"name": "文档", "id_number": resident_id(1, "19600101"), "village_code": VILLAGE,
                     "phone": "13812345678"});
    let (_, created) = c
        .call(M::POST, residents, residents, k, Body::Json(new.clone()))
        .await;
    let resident = created["id"].as_i64().unwrap_or_default();
    c.call(M::POST, residents, residents, k, Body::Json(new))
        .await;
    let bad = json!({"name": "文档", "id_number": "123", "village_code": VILLAGE});
    c.call(M::POST, residents, residents, k, Body::Json(bad))
        .await;
    c.call(
        M::POST,
        residents,
        residents,
        k,
        Body::Raw("text/plain", "{}"),
    )
    .await;
    c.call(M::GET, residents, residents, k, Body::None).await;
    c.call(
        M::GET,
        residents,
        "/api/v1/residents?cohort=old",
        k,
        Body::None,
    )
    .await;
    c.call(
        M::GET,
        residents,
        "/api/v1/residents?limit=x",
        k,
        Body::None,
    )
    .await;
    let one = "/api/v1/residents/{id}";
    c.call(
        M::GET,
        one,
        &format!("/api/v1/residents/{resident}"),
        k,
        Body::None,
    )
    .await;
    c.call(
        M::GET,
        one,
        &format!("/api/v1/residents/{resident}?reveal=true"),
        a,
        Body::None,
    )
    .await;
    c.call(M::GET, one, "/api/v1/residents/999999", k, Body::None)
        .await;
    c.call(M::GET, one, "/api/v1/residents/abc", k, Body::None)
        .await;
    let book = "/api/v1/migrant-book";
    c.call(M::GET, book, book, k, Body::None).await;

    // Campaigns, institutions, bookings.
    let campaign = app.open_campaign().await;
    c.call(
        M::GET,
        "/api/v1/campaigns",
        "/api/v1/campaigns",
        k,
        Body::None,
    )
    .await;
    let one_campaign = format!("/api/v1/campaigns/{campaign}");
    c.call(
        M::GET,
        "/api/v1/campaigns/{id}",
        &one_campaign,
        k,
        Body::None,
    )
    .await;
    c.call(
        M::POST,
        "/api/v1/campaigns",
        "/api/v1/campaigns",
        o,
        Body::Json(json!({"year": 1990})),
    )
    .await;
    let enrolled = "/api/v1/campaigns/{id}/residents/{resident_id}";
    c.call(
        M::GET,
        enrolled,
        &format!("{one_campaign}/residents/{resident}"),
        k,
        Body::None,
    )
    .await;
    let worklist = "/api/v1/campaigns/{id}/worklists/{kind}";
    c.call(
        M::GET,
        worklist,
        &format!("{one_campaign}/worklists/not_reached"),
        k,
        Body::None,
    )
    .await;
    c.call(
        M::GET,
        "/api/v1/institutions",
        "/api/v1/institutions",
        k,
        Body::None,
    )
    .await;
    let calendar = "/api/v1/institutions/{id}/calendar";
    let days = format!(
        "/api/v1/institutions/{institution}/calendar?from={}&to={}",
        outreach::registry::today(),
        outreach::registry::today() + chrono::Duration::days(3)
    );
    c.call(M::GET, calendar, &days, k, Body::None).await;
    let bookings = "/api/v1/campaigns/{id}/bookings";
    let day = outreach::registry::today() + chrono::Duration::days(1);
    let booking = json!({"institution_id": institution, "day": day, "resident_ids": [resident]});
    c.call(
        M::POST,
        bookings,
        &format!("{one_campaign}/bookings"),
        k,
        Body::Json(booking.clone()),
    )
    .await;
    c.call(
        M::POST,
        bookings,
        &format!("{one_campaign}/bookings"),
        k,
        Body::Json(booking),
    )
    .await;
    let appointments = "/api/v1/campaigns/{id}/appointments";
    c.call(
        M::GET,
        appointments,
        &format!("{one_campaign}/appointments"),
        k,
        Body::None,
    )
    .await;

    // Contact, messaging, refusals.
    let attempts = "/api/v1/campaigns/{id}/residents/{resident_id}/attempts";
    let attempts_path = format!("{one_campaign}/residents/{resident}/attempts");
    let attempt = json!({"channel": "phone_call", "contact": "own_phone", "outcome": "no_answer"});
    c.call(M::POST, attempts, &attempts_path, k, Body::Json(attempt))
        .await;
    let old = json!({"channel": "we_chat", "contact": "own_phone", "outcome": "no_answer"});
    c.call(M::POST, attempts, &attempts_path, k, Body::Json(old))
        .await;
    c.call(M::GET, attempts, &attempts_path, k, Body::None)
        .await;
    let refusals = "/api/v1/campaigns/{id}/residents/{resident_id}/refusals";
    let refusal = json!({"reason": "unwilling", "signer_name": "本人", "signer_relation": "self",
                         "signature_strokes": crate::refusals::strokes()});
    c.call(
        M::POST,
        refusals,
        &format!("{one_campaign}/residents/{resident}/refusals"),
        k,
        Body::Json(refusal),
    )
    .await;
    let register = "/api/v1/campaigns/{id}/refusals";
    c.call(
        M::GET,
        register,
        &format!("{one_campaign}/refusals"),
        k,
        Body::None,
    )
    .await;
    let messages = "/api/v1/residents/{id}/messages";
    c.call(
        M::GET,
        messages,
        &format!("/api/v1/residents/{resident}/messages"),
        k,
        Body::None,
    )
    .await;
    let health = "/api/v1/outbox/health";
    c.call(M::GET, health, health, o, Body::None).await;
    c.call(M::GET, "/api/v1/tasks", "/api/v1/tasks", k, Body::None)
        .await;
    c.call(M::GET, "/api/v1/replies", "/api/v1/replies", k, Body::None)
        .await;
    let waves = "/api/v1/campaigns/{id}/waves";
    c.call(
        M::GET,
        waves,
        &format!("{one_campaign}/waves"),
        k,
        Body::None,
    )
    .await;

    let evidence = "/api/v1/exams/{id}/evidence";
    c.call(
        M::GET,
        evidence,
        "/api/v1/exams/999999/evidence",
        o,
        Body::None,
    )
    .await;
    c.call(
        M::GET,
        evidence,
        "/api/v1/exams/999999/evidence",
        a,
        Body::None,
    )
    .await;
    let verify = "/api/v1/refusals/verify";
    c.call(M::GET, verify, verify, o, Body::None).await;
    let appointment = "/api/v1/appointments/{id}";
    c.call(
        M::GET,
        appointment,
        "/api/v1/appointments/999999",
        k,
        Body::None,
    )
    .await;

    // Reports.
    for (template, query) in [
        ("/api/v1/campaigns/{id}/reports/progress", ""),
        ("/api/v1/campaigns/{id}/reports/progress", "?by=nonsense"),
        ("/api/v1/campaigns/{id}/reports/series", ""),
        ("/api/v1/campaigns/{id}/reports/rankings", ""),
        ("/api/v1/campaigns/{id}/reports/contacts", ""),
    ] {
        let path = template.replace("{id}", &campaign.to_string()) + query;
        c.call(M::GET, template, &path, o, Body::None).await;
    }
    c.call(
        M::GET,
        "/api/v1/campaigns/{id}/reports/progress",
        &format!("{one_campaign}/reports/progress"),
        None,
        Body::None,
    )
    .await;

    // A closed campaign takes no more attempts or exam lists: 409, documented.
    let close = "/api/v1/campaigns/{id}/close";
    let (closed, _) = c
        .call(
            M::POST,
            close,
            &format!("{one_campaign}/close"),
            o,
            Body::None,
        )
        .await;
    assert_eq!(closed, 200, "the campaign closes");
    let attempt = json!({"channel": "phone_call", "contact": "own_phone", "outcome": "no_answer"});
    let (status, _) = c
        .call(M::POST, attempts, &attempts_path, k, Body::Json(attempt))
        .await;
    assert_eq!(status, 409, "an attempt on a closed campaign");
    let import = "/api/v1/campaigns/{id}/exams/import";
    let (status, _) = c
        .call(
            M::POST,
            import,
            &format!("{one_campaign}/exams/import"),
            o,
            Body::Raw(
                "text/csv",
                "身份证号,体检日期,体检机构\n110101199003074514,2027-03-01,DOC-1\n",
            ),
        )
        .await;
    assert_eq!(status, 409, "an exam list for a closed campaign");

    let families: Vec<&str> = c.families.iter().map(String::as_str).collect();
    for family in [
        "healthz",
        "auth",
        "me",
        "areas",
        "users",
        "audit",
        "residents",
        "migrant-book",
        "campaigns",
        "institutions",
        "outbox",
        "tasks",
        "replies",
        "exams",
        "refusals",
        "appointments",
    ] {
        assert!(families.contains(&family), "{family} not called");
    }
    assert!(
        c.errors.is_empty(),
        "responses that do not match the document:\n{}",
        c.errors.join("\n")
    );
}
