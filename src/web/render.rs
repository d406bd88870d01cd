//! The page templates (`web/templates/`), embedded at compile time and checked when first
//! used; HTML is escaped by default.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;

/// Each template by its path under `web/templates/`.
macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../web/templates/", $name)))),*]
    };
}
pub(super) use templates;

/// The sign-in, error, cadre and resident-link pages; each office page module lists its own.
pub(super) const CORE: &[(&str, &str)] = templates![
    "base.html",
    "login.html",
    "error.html",
    "m/worklist.html",
    "m/resident.html",
    "m/refusal.html",
    "m/book.html",
    "m/tasks.html",
    "app/frame.html",
    "r/page.html",
    "r/gone.html",
    "r/busy.html",
];

/// Templates by module, as the page modules list them.
pub(super) type Templates = &'static [&'static [(&'static str, &'static str)]];

static ENV: OnceLock<Environment<'static>> = OnceLock::new();

/// Makes `templates` the ones pages render from (once; the router does it when it is built,
/// so that this module names none of the modules that render through it).
pub(super) fn install(templates: Templates) {
    ENV.get_or_init(|| environment(templates));
}

/// The environment of `templates`, each parsed now: a template that does not parse stops
/// the service at its start rather than at the first request for it.
pub(super) fn environment(templates: Templates) -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in templates.iter().copied().flatten() {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("page template {name}: {e}"));
    }
    env.add_function("asset", |name: String| {
        minijinja::Value::from_safe_string(super::assets::url(&name))
    });
    env
}

/// A page rendered from `template` with `context`, as a response with `status`.
pub fn page(status: StatusCode, template: &str, context: minijinja::Value) -> Response {
    let rendered = match ENV.get() {
        Some(env) => env.get_template(template).and_then(|t| t.render(context)),
        None => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "the page templates were not installed",
        )),
    };
    match rendered {
        Ok(html) => (
            status,
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            Html(html),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(template, error = %error, "a page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><meta charset=utf-8><p>页面出错，请稍后再试</p>".to_owned()),
            )
                .into_response()
        }
    }
}
