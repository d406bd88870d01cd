//! Who is acting: a signed-in user, the command line, the scheduler or a resident's own
//! link, with the role and the area scope every query is filtered by.

use entities::users::Role;

use super::Scope;

/// Who is acting: a signed-in user, or the command line (which has the whole tree).
#[derive(Clone, Debug)]
pub struct Actor {
    pub user_id: Option<i32>,
    pub username: String,
    pub role: Role,
    pub scope: Scope,
    pub request_id: Option<String>,
    /// The token this request came with, for logout.
    pub token_id: Option<i32>,
    /// The institution an `institution` user works for.
    pub institution_id: Option<i32>,
}

impl Actor {
    /// The operator at the command line: full scope, recorded as `system` in the audit log.
    pub fn cli() -> Self {
        Self {
            user_id: None,
            username: "cli".to_owned(),
            role: Role::Office,
            scope: Scope::All,
            request_id: None,
            token_id: None,
            institution_id: None,
        }
    }

    /// Scheduled work (no-shows, reminders): full scope, recorded as `system`.
    pub fn system() -> Self {
        Self {
            username: "scheduler".to_owned(),
            ..Self::cli()
        }
    }

    /// A resident acting on their own appointment link: what a village cadre of their
    /// village may do to their appointment, recorded as `system` under `resident_link`.
    pub fn resident_link(village: crate::area::AreaCode) -> Self {
        Self {
            username: "resident_link".to_owned(),
            role: Role::Cadre,
            scope: Scope::Within(village),
            ..Self::cli()
        }
    }

    pub fn role_label(&self) -> &'static str {
        if self.user_id.is_none() {
            return "system";
        }
        role_name(self.role)
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Office => "office",
        Role::Township => "township",
        Role::Cadre => "cadre",
        Role::Institution => "institution",
        Role::Auditor => "auditor",
    }
}
