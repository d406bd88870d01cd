//! The page templates (`web/templates/`), embedded at compile time and checked when first
//! used; HTML is escaped by default.

use std::sync::LazyLock;

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
const CORE: &[(&str, &str)] = templates![
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

/// Every template, by module.
const TEMPLATES: &[&[(&str, &str)]] = &[
    CORE,
    super::dashboard::TEMPLATES,
    super::review::TEMPLATES,
    super::audit::TEMPLATES,
    super::campaigns::TEMPLATES,
    super::institutions::TEMPLATES,
    super::users::TEMPLATES,
    super::imports::TEMPLATES,
    super::waves::TEMPLATES,
    super::clinic::TEMPLATES,
    super::apidocs::TEMPLATES,
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES.iter().copied().flatten() {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("page template {name}: {e}"));
    }
    env.add_function("asset", |name: String| {
        minijinja::Value::from_safe_string(super::assets::url(&name))
    });
    env
});

/// A page rendered from `template` with `context`, as a response with `status`.
pub fn page(status: StatusCode, template: &str, context: minijinja::Value) -> Response {
    match ENV.get_template(template).and_then(|t| t.render(context)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES.iter().copied().flatten() {
            ENV.get_template(name).unwrap();
        }
    }
}
