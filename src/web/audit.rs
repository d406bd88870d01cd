//! The audit log for the office and auditors, with filters.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use chrono::{Days, NaiveDate, NaiveTime};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::Session;
use super::pages::{PageError, local_time, ser};
use super::render::{page, templates};
use crate::area::{self, AreaCode, AreaNode};
use crate::audit::{self, AuditEntry, AuditFilter};
use crate::error::AppError;
use crate::http::guard::ReadAudit;
use crate::state::AppState;
use crate::time::{DEFAULT_ZONE, at_local};

pub(super) const TEMPLATES: &[(&str, &str)] = templates!["app/audit.html"];

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/app/audit", get(log))
}

/// Entries on one page of the log.
const PAGE_SIZE: u64 = 50;

/// The actions the service records, as the office reads them; the filter offers these.
const ACTIONS: &[(&str, &str)] = &[
    ("refusal.register", "登记拒检"),
    ("refusal.confirm", "确认拒检"),
    ("refusal.return", "退回拒检登记"),
    ("refusal.revoke", "撤销拒检（已体检）"),
    ("refusal.verify", "校验拒检记录"),
    ("refusal.signature_view", "查看拒检签名"),
    ("refusal.export_pii", "导出拒检登记簿（完整身份证号）"),
    ("resident.view_pii", "查看居民完整信息"),
    ("resident.export_pii", "导出居民（完整信息）"),
    ("resident.create", "新增居民"),
    ("resident.update", "修改居民"),
    ("resident.import", "导入居民"),
    ("resident.import_update", "导入更新居民"),
    ("resident.import_tags", "导入居民标签"),
    ("resident.set_tags", "设置居民标签"),
    ("resident.move_household", "户口迁移"),
    ("resident.mark_deceased", "标记死亡"),
    ("resident.mark_moved_out", "标记迁出"),
    ("resident.opt_out", "退订短信"),
    ("contact.attempt", "登记联系"),
    ("appointment.book", "预约"),
    ("appointment.reschedule", "改期"),
    ("appointment.cancel", "取消预约"),
    ("appointment.attendance", "登记到检"),
    ("appointment.no_show", "爽约"),
    ("exam.record", "登记体检"),
    ("exam.record_elsewhere", "登记外地体检"),
    ("exam.import", "导入体检结果"),
    ("exam.evidence_download", "下载体检证明"),
    ("campaign.create", "新建体检工作"),
    ("campaign.update", "修改体检工作"),
    ("campaign.open", "开始体检工作"),
    ("campaign.close", "结束体检工作"),
    ("wave.create", "新建群发"),
    ("wave.cancel", "取消群发"),
    ("message.resend", "重发消息"),
    ("task.done", "完成任务"),
    ("link.confirm", "居民确认预约"),
    ("institution.create", "新增医疗机构"),
    ("institution.update", "修改医疗机构"),
    ("institution.set_day", "设置接诊量"),
    ("institution.import_calendar", "导入接诊日历"),
    ("user.create", "新增用户"),
    ("user.update", "修改用户"),
    ("user.reset_password", "重置密码"),
    ("user.change_password", "修改密码"),
    ("user.bootstrap_admin", "创建初始管理员"),
    ("area.import", "导入区划"),
];

/// The kinds of records entries are about.
const ENTITIES: &[(&str, &str)] = &[
    ("refusal_record", "拒检记录"),
    ("refusal_chain", "拒检记录链"),
    ("refusal_register", "拒检登记簿"),
    ("refusal_signature", "拒检签名"),
    ("resident", "居民"),
    ("contact_attempt", "联系记录"),
    ("appointment", "预约"),
    ("exam", "体检"),
    ("campaign", "体检工作"),
    ("wave", "群发"),
    ("message", "消息"),
    ("outreach_task", "任务"),
    ("migrant_book", "外出人员台账"),
    ("institution", "医疗机构"),
    ("user", "用户"),
    ("area", "区划"),
];

fn label_of(list: &[(&str, &'static str)], code: &str) -> Option<&'static str> {
    list.iter().find(|(c, _)| *c == code).map(|(_, l)| *l)
}

/// Who acted, as the log records it.
fn role_label(role: &str) -> &'static str {
    match role {
        "office" => "县卫健委",
        "township" => "乡镇",
        "cadre" => "村干部",
        "institution" => "医疗机构",
        "auditor" => "审计",
        _ => "系统",
    }
}

/// The filter form as sent: every field text, read by [`Filters::parse`].
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    entity: String,
    #[serde(default)]
    entity_id: String,
    /// The acting user's id.
    #[serde(default)]
    actor: String,
    /// First day, `YYYY-MM-DD` (local).
    #[serde(default)]
    since: String,
    /// Last day, `YYYY-MM-DD` (local), included.
    #[serde(default)]
    until: String,
    #[serde(default)]
    area: String,
    /// Cursor: entries older than this id.
    #[serde(default)]
    before: String,
}

/// `GET /app/audit`: the audit log of the caller's scope, newest first, 50 entries a page,
/// filtered as the API's `GET /audit` is (action, record kind and id, acting user, days,
/// area); details as the log keeps them (never full ID numbers or phones).
pub async fn log(
    State(state): State<AppState>,
    session: Session<ReadAudit>,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let actor = &session.actor;
    let forest = area::tree(&state.db, &actor.scope).await?;
    let mut areas = Vec::new();
    flatten(&forest, 0, &mut areas);
    let names: HashMap<&str, &str> = areas
        .iter()
        .map(|(code, name, _)| (code.as_str(), name.as_str()))
        .collect();

    let (entries, next_before, error, status) = match filter_of(&query) {
        Ok((filter, area)) => {
            if let Some(area) = &area
                && !actor.scope.contains(area)
            {
                return Err(AppError::out_of_scope().into());
            }
            let found = audit::list(&state.db, &actor.scope, filter, area).await?;
            (found.entries, found.next_before, None, StatusCode::OK)
        }
        Err(message) => (
            Vec::new(),
            None,
            Some(message),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    };
    let rows: Vec<_> = entries.iter().map(|e| row(e, &names)).collect();

    let mut actions: Vec<_> = ACTIONS
        .iter()
        .map(|&(code, label)| context! { code, label })
        .collect();
    if !query.action.is_empty() && label_of(ACTIONS, &query.action).is_none() {
        actions.push(context! { code => query.action.clone(), label => query.action.clone() });
    }
    let mut entities: Vec<_> = ENTITIES
        .iter()
        .map(|&(code, label)| context! { code, label })
        .collect();
    if !query.entity.is_empty() && label_of(ENTITIES, &query.entity).is_none() {
        entities.push(context! { code => query.entity.clone(), label => query.entity.clone() });
    }
    let areas: Vec<_> = areas
        .iter()
        .map(|(code, name, depth)| context! { code, name, depth })
        .collect();
    let filtered = AuditQuery {
        before: String::new(),
        ..copy(&query)
    };
    let next = next_before.map(|before| {
        query_string(&AuditQuery {
            before: before.to_string(),
            ..copy(&query)
        })
    });
    Ok(page(
        status,
        "app/audit.html",
        context! {
            section => "audit",
            q => ser(&query),
            actor_name => entries
                .iter()
                .find(|e| e.actor_user_id.is_some_and(|id| id.to_string() == query.actor.trim()))
                .map(|e| e.actor_name.clone()),
            rows,
            actions,
            entities,
            areas,
            error,
            first_page => (!query.before.is_empty()).then(|| query_string(&filtered)),
            next,
            ..session.frame()
        },
    ))
}

fn copy(query: &AuditQuery) -> AuditQuery {
    AuditQuery {
        action: query.action.clone(),
        entity: query.entity.clone(),
        entity_id: query.entity_id.clone(),
        actor: query.actor.clone(),
        since: query.since.clone(),
        until: query.until.clone(),
        area: query.area.clone(),
        before: query.before.clone(),
    }
}

/// The address of the log with `query`'s non-empty fields.
fn query_string(query: &AuditQuery) -> String {
    let value = serde_json::to_value(query).unwrap_or_default();
    let mut out = form_urlencoded::Serializer::new(String::new());
    if let Some(fields) = value.as_object() {
        for (key, value) in fields {
            if let Some(value) = value.as_str().map(str::trim).filter(|v| !v.is_empty()) {
                out.append_pair(key, value);
            }
        }
    }
    format!("/app/audit?{}", out.finish())
}

/// The API's filter from the form, or what is wrong with it.
fn filter_of(query: &AuditQuery) -> Result<(AuditFilter, Option<AreaCode>), String> {
    let text = |raw: &str| Some(raw.trim().to_owned()).filter(|s| !s.is_empty());
    let actor_user_id = match text(&query.actor) {
        None => None,
        Some(raw) => Some(
            raw.parse::<i32>()
                .map_err(|_| format!("操作人编号应为整数：{raw}"))?,
        ),
    };
    let before = match text(&query.before) {
        None => None,
        Some(raw) => Some(
            raw.parse::<i32>()
                .map_err(|_| "翻页位置无效，请从第一页重新查看".to_owned())?,
        ),
    };
    let day = |raw: &str, what: &str| -> Result<Option<NaiveDate>, String> {
        match text(raw) {
            None => Ok(None),
            Some(raw) => NaiveDate::parse_from_str(&raw, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| format!("{what}应为 年-月-日，例如 2026-03-01：{raw}")),
        }
    };
    let since = day(&query.since, "开始日期")?;
    let until = day(&query.until, "结束日期")?;
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err("开始日期晚于结束日期".to_owned());
    }
    let midnight = NaiveTime::MIN;
    let until = match until {
        None => None,
        Some(day) => Some(
            day.checked_add_days(Days::new(1))
                .ok_or_else(|| "结束日期无效".to_owned())?,
        ),
    };
    let area = match text(&query.area) {
        None => None,
        Some(raw) => Some(AreaCode::parse(&raw).map_err(|e| format!("地区代码无效：{e}"))?),
    };
    Ok((
        AuditFilter {
            action: text(&query.action),
            entity: text(&query.entity),
            entity_id: text(&query.entity_id),
            actor_user_id,
            since: since.map(|d| at_local(DEFAULT_ZONE, d, midnight)),
            until: until.map(|d| at_local(DEFAULT_ZONE, d, midnight)),
            area: None,
            limit: Some(PAGE_SIZE),
            before,
        },
        area,
    ))
}

/// One entry as the page shows it: labels for codes, the details as key and value.
fn row(entry: &AuditEntry, names: &HashMap<&str, &str>) -> minijinja::Value {
    let details: Vec<_> = match &entry.summary {
        serde_json::Value::Object(fields) => fields
            .iter()
            .filter(|(_, v)| !blank(v))
            .map(|(key, value)| detail(key, value))
            .collect(),
        serde_json::Value::Null => Vec::new(),
        other => vec![detail("", other)],
    };
    context! {
        id => entry.id,
        at => local_time(None, entry.at),
        actor_name => entry.actor_name.clone(),
        actor_user_id => entry.actor_user_id,
        role => role_label(&entry.actor_role),
        action => entry.action.clone(),
        action_label => label_of(ACTIONS, &entry.action),
        entity => entry.entity.clone(),
        entity_label => label_of(ENTITIES, &entry.entity),
        entity_id => entry.entity_id.clone(),
        area => entry.area_code.as_deref().map(|code| names.get(code).copied().unwrap_or(code)),
        request_id => entry.request_id.clone(),
        details,
    }
}

/// Nothing worth a line: null, an empty text, list or object.
fn blank(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A detail as text, cut short when long (hashes, lists), the whole of it (up to a limit) in
/// `full` for the hover title.
fn detail(key: &str, value: &serde_json::Value) -> minijinja::Value {
    const SHORT: usize = 40;
    const FULL: usize = 500;
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(true) => "是".to_owned(),
        serde_json::Value::Bool(false) => "否".to_owned(),
        other => other.to_string(),
    };
    let cut = |max: usize| -> String {
        if text.chars().count() > max {
            let head: String = text.chars().take(max).collect();
            format!("{head}…")
        } else {
            text.clone()
        }
    };
    context! { key, value => cut(SHORT), full => cut(FULL) }
}

/// The area tree as a list, each area with its depth.
fn flatten(nodes: &[AreaNode], depth: usize, out: &mut Vec<(String, String, usize)>) {
    for node in nodes {
        out.push((node.code.clone(), node.name.clone(), depth));
        flatten(&node.children, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(since: &str, until: &str) -> AuditQuery {
        AuditQuery {
            since: since.to_owned(),
            until: until.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn days_are_local_and_the_last_one_is_included() {
        let (filter, _) = filter_of(&query("2026-03-01", "2026-03-01")).unwrap();
        assert_eq!(
            filter.since.unwrap().to_rfc3339(),
            "2026-02-28T16:00:00+00:00"
        );
        assert_eq!(
            filter.until.unwrap().to_rfc3339(),
            "2026-03-01T16:00:00+00:00"
        );
        assert_eq!(filter.limit, Some(PAGE_SIZE));
    }

    #[test]
    fn bad_filters_are_told_not_guessed() {
        assert!(
            filter_of(&query("2026-13-01", ""))
                .unwrap_err()
                .contains("开始日期")
        );
        assert!(filter_of(&query("2026-03-02", "2026-03-01")).is_err());
        let actor = AuditQuery {
            actor: "li".to_owned(),
            ..Default::default()
        };
        assert!(filter_of(&actor).unwrap_err().contains("操作人"));
        let area = AuditQuery {
            area: "65".to_owned(),
            ..Default::default()
        };
        assert!(filter_of(&area).is_err());
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let next = query_string(&AuditQuery {
            action: "refusal.confirm".to_owned(),
            before: "42".to_owned(),
            ..Default::default()
        });
        assert_eq!(next, "/app/audit?action=refusal.confirm&before=42");
    }
}
