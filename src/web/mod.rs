//! The pages people use in a browser, on the API's origin: sign-in at `/`, the village
//! cadre's phone pages under `/m/`, the other roles' start page under `/app/`. Server-rendered
//! from templates and assets embedded at compile time; every read goes through the same
//! domain functions and scope rules as the JSON API, and a page session is an API token kept
//! in an HttpOnly cookie, so logout, expiry, deactivation and password resets end it alike.

mod apidocs;
mod assets;
mod audit;
mod campaigns;
mod clinic;
mod dashboard;
mod field;
mod imports;
mod institutions;
mod link;
mod pages;
mod render;
mod review;
mod users;
mod waves;

use std::marker::PhantomData;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use entities::users::Role;
use serde::de::DeserializeOwned;

use crate::auth::{Actor, token};
use crate::error::AppError;
use crate::http::guard::{AnyRole, Auth, Policy, SESSION_COOKIE, session_cookie};
use crate::state::AppState;

/// Every page template, by module.
const TEMPLATES: render::Templates = &[
    render::CORE,
    dashboard::TEMPLATES,
    review::TEMPLATES,
    audit::TEMPLATES,
    campaigns::TEMPLATES,
    institutions::TEMPLATES,
    users::TEMPLATES,
    imports::TEMPLATES,
    waves::TEMPLATES,
    clinic::TEMPLATES,
    apidocs::TEMPLATES,
];

pub fn router() -> Router<AppState> {
    render::install(TEMPLATES);
    Router::new()
        .route("/", get(pages::sign_in_page).post(pages::sign_in))
        .route("/logout", post(pages::sign_out))
        .route("/m", get(|| async { Redirect::permanent("/m/") }))
        .route("/m/", get(pages::worklist))
        .route("/m/sw.js", get(assets::service_worker))
        .route("/m/residents/{id}", get(pages::resident))
        .route("/m/residents/{id}/refusal", get(pages::refusal))
        .route("/m/book", get(field::book))
        .route("/m/tasks", get(field::tasks))
        .route("/m/tasks/{id}/done", post(field::task_done))
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .route("/app/", get(dashboard::home))
        .route("/static/{file}", get(assets::serve))
        .route("/r/{code}", get(link::show))
        .route("/r/{code}/confirm", post(link::confirm))
        .route("/r/{code}/reschedule", post(link::reschedule))
        .route("/r/{code}/opt-out", post(link::opt_out))
        .merge(dashboard::routes())
        .merge(review::routes())
        .merge(audit::routes())
        .merge(campaigns::routes())
        .merge(institutions::routes())
        .merge(users::routes())
        .merge(imports::routes())
        .merge(waves::routes())
        .merge(clinic::routes())
        .merge(apidocs::routes())
}

/// Where a role lands after signing in.
pub fn home_of(role: Role) -> &'static str {
    match role {
        Role::Cadre => "/m/",
        _ => "/app/",
    }
}

/// A signed-in browser user whose role satisfies `P`, with the page's anti-forgery token.
/// Without a valid session the browser is sent to the sign-in page; a role the page is not
/// for gets a page saying so.
pub struct Session<P: Policy = AnyRole> {
    pub actor: Actor,
    pub csrf: String,
    /// Whether the API browser is served (the office's menu links to it).
    api_docs: bool,
    _policy: PhantomData<P>,
}

impl<P: Policy> FromRequestParts<AppState> for Session<P> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        // Pages are reached with the cookie only; a bearer header has no page session.
        let Some(cookie) = session_cookie(parts) else {
            return Err(Redirect::to("/").into_response());
        };
        let csrf = token::csrf(cookie);
        match Auth::<P>::resolve(parts, state, true).await {
            Ok(auth) => Ok(Self {
                actor: auth.actor,
                csrf,
                api_docs: state.settings.http.api_docs,
                _policy: PhantomData,
            }),
            Err(AppError::Unauthorized(_)) => Err((
                [(header::SET_COOKIE, clear_cookie(state))],
                Redirect::to("/"),
            )
                .into_response()),
            // A role the page is not for, or the database failing: a page saying so.
            Err(error) => Err(pages::error_page(&error)),
        }
    }
}

impl<P: Policy> Session<P> {
    /// What every signed-in page's frame shows: who is signed in, as what, the sections the
    /// role may open and the token its forms and requests carry. Merged into a page's context
    /// with `..session.frame()`.
    pub fn frame(&self) -> minijinja::Value {
        minijinja::context! {
            user => self.actor.username.clone(),
            role => pages::role_title(self.actor.role),
            role_code => crate::auth::role_name(self.actor.role),
            api_docs => self.api_docs,
            csrf => self.csrf.clone(),
        }
    }
}

/// A form posted by a page, accepted only with the session's anti-forgery token in its
/// `_csrf` field and, when the browser names one, from this site's own origin.
pub struct Form<T>(pub T);

#[derive(serde::Deserialize)]
struct CsrfField {
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Form<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        if !same_origin(&parts.headers) {
            return Err(pages::error_page(&forged()));
        }
        let expected = session_cookie(&parts).map(token::csrf);
        let request = Request::from_parts(parts, body);
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let field: CsrfField =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| pages::error_page(&bad_form()))?;
        let matches = expected.is_some_and(|expected| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                field.csrf.as_bytes(),
                expected.as_bytes(),
            ))
        });
        if !matches {
            return Err(pages::error_page(&forged()));
        }
        let value =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| pages::error_page(&bad_form()))?;
        Ok(Self(value))
    }
}

fn forged() -> AppError {
    AppError::Forbidden("页面已过期或来源不明，请刷新后重试".to_owned())
}

fn bad_form() -> AppError {
    AppError::Request {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_form",
        message: "提交的内容不完整，请刷新后重试".to_owned(),
    }
}

/// A request a browser sent from this site: no `Origin`, or one naming the host it was sent
/// to. Cross-site form posts carry the other site's origin.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    matches!((host, origin_host), (Some(host), Some(origin)) if host.eq_ignore_ascii_case(&origin))
}

/// Whether cookies must be `Secure`: the service is reached over https.
fn secure(state: &AppState) -> bool {
    state
        .settings
        .http
        .public_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"))
}

/// The `Set-Cookie` value that starts a page session with `token`.
pub fn session_cookie_for(state: &AppState, token: &str) -> String {
    let hours = i64::from(state.settings.auth.token_ttl_hours);
    set_cookie(state, token, cookie::time::Duration::hours(hours))
}

/// The `Set-Cookie` value that ends a page session in the browser.
pub fn clear_cookie(state: &AppState) -> String {
    set_cookie(state, "", cookie::time::Duration::ZERO)
}

fn set_cookie(state: &AppState, value: &str, max_age: cookie::time::Duration) -> String {
    cookie::Cookie::build((SESSION_COOKIE, value.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure(state))
        .max_age(max_age)
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let env = render::environment(TEMPLATES);
        for (name, _) in TEMPLATES.iter().copied().flatten() {
            env.get_template(name).unwrap();
        }
    }
}
