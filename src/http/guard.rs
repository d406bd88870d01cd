//! The `Auth<P>` extractor: the user a request is made by (bearer token or the page
//! session's cookie, with the anti-forgery check for changes made with the cookie), and the
//! role policies endpoints name in their signatures.

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use entities::users::Role;

use crate::area::AreaCode;
use crate::auth::{Actor, Scope, token};
use crate::error::AppError;
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The cookie a signed-in browser carries: the same kind of token as `Authorization: Bearer`.
pub const SESSION_COOKIE: &str = "outreach_session";
/// The header (or the `_csrf` form field) a page sends with every change it makes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The token a request presents: a bearer header, or the page session's cookie.
pub fn presented_token(parts: &Parts) -> Option<(&str, bool)> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| (token.trim(), false));
    }
    session_cookie(parts).map(|token| (token, true))
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
}

/// Which roles may call an endpoint.
pub trait Policy: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Any signed-in user.
pub struct AnyRole;
impl Policy for AnyRole {
    const ROLES: &'static [Role] = &[
        Role::Office,
        Role::Township,
        Role::Cadre,
        Role::Institution,
        Role::Auditor,
    ];
}

/// County office only (user management, area import).
pub struct OfficeOnly;
impl Policy for OfficeOnly {
    const ROLES: &'static [Role] = &[Role::Office];
}

/// Office and auditors (reading the audit log).
pub struct ReadAudit;
impl Policy for ReadAudit {
    const ROLES: &'static [Role] = &[Role::Office, Role::Auditor];
}

/// The roles that work with residents in the field and change their records: village
/// cadres, and the township and county officers who stand in for them.
pub struct FieldWork;
impl Policy for FieldWork {
    const ROLES: &'static [Role] = &[Role::Office, Role::Township, Role::Cadre];
}

/// Field work and those who check it: the residents' records, messages and registers, but
/// not for institution staff, who see only the residents they examine.
pub struct FieldAndAudit;
impl Policy for FieldAndAudit {
    const ROLES: &'static [Role] = &[Role::Office, Role::Township, Role::Cadre, Role::Auditor];
}

/// The office and institution staff (for their own institution).
pub struct ManageInstitution;
impl Policy for ManageInstitution {
    const ROLES: &'static [Role] = &[Role::Office, Role::Institution];
}

/// A signed-in user whose role satisfies `P`.
pub struct Auth<P: Policy = AnyRole> {
    pub actor: Actor,
    _policy: PhantomData<P>,
}

impl<P: Policy> Deref for Auth<P> {
    type Target = Actor;
    fn deref(&self) -> &Actor {
        &self.actor
    }
}

impl<P: Policy> FromRequestParts<AppState> for Auth<P> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Self::resolve(parts, state, false).await
    }
}

impl<P: Policy> Auth<P> {
    /// The user a request is made by. `csrf_in_form`: the caller is a page's form handler that
    /// checks the anti-forgery token in the form body itself (`web::Form`), so a change made
    /// with the session cookie needs no header.
    pub async fn resolve(
        parts: &Parts,
        state: &AppState,
        csrf_in_form: bool,
    ) -> Result<Self, AppError> {
        let (presented, by_cookie) =
            presented_token(parts).ok_or_else(|| AppError::Unauthorized("请先登录".to_owned()))?;
        if !token::looks_valid(presented) {
            return Err(AppError::Unauthorized(
                "登录凭证无效，请重新登录".to_owned(),
            ));
        }
        // A browser sends its cookie with any request, a forged cross-site one included: every
        // change made with the cookie carries the page's anti-forgery token as well.
        if by_cookie && !csrf_in_form && !parts.method.is_safe() {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let expected = token::csrf(presented);
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                sent.as_bytes(),
                expected.as_bytes(),
            )) {
                return Err(AppError::Forbidden("页面已过期，请刷新后重试".to_owned()));
            }
        }
        let (token_row, user) = token::holder(&state.db, presented).await?;
        if !P::ROLES.contains(&user.role) {
            return Err(AppError::forbidden_role());
        }
        let area = match user.area_code.as_deref() {
            Some(code) => Some(AreaCode::parse(code).map_err(|e| {
                anyhow::anyhow!("user {} has an invalid stored area code: {e}", user.id)
            })?),
            None => None,
        };
        let request_id = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self {
            actor: Actor {
                user_id: Some(user.id),
                username: user.username,
                role: user.role,
                scope: Scope::from_area(area),
                request_id,
                token_id: Some(token_row.id),
                institution_id: user.institution_id,
            },
            _policy: PhantomData,
        })
    }
}
