//! The resident's own appointment link, `{public_url}/r/{code}`: one random code per resident
//! and campaign, written into the notices and reminders, that opens a page where the resident
//! confirms, moves or opts out without signing in. The database keeps the code only encrypted
//! and as a blind index; a link stops working when its campaign is no longer open.

use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use entities::{appointments, institutions, residents};
use rand::Rng;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
};
use serde::Serialize;

use crate::area::AreaCode;
use crate::auth::Actor;
use crate::campaign::{self, Campaign};
use crate::db::Sql;
use crate::error::{AppError, AppResult};
use crate::institution::{self, DayView};
use crate::privacy::{Field, Privacy};

/// Characters of a code: 12 of 62 letters and digits, about 71 random bits.
pub const CODE_LEN: usize = 12;

pub use super::templates::carries_link;

/// A resident's code as stored: sealed.
#[derive(FromQueryResult)]
struct Sealed {
    resident_id: i32,
    code_enc: Vec<u8>,
}

/// Whose link a code opens.
#[derive(FromQueryResult)]
struct LinkRow {
    campaign_id: i32,
    resident_id: i32,
}

/// A new code from the thread's CSPRNG (ChaCha, seeded from the operating system).
fn new_code() -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(CODE_LEN)
        .map(char::from)
        .collect()
}

/// Whether `raw` has the shape of a code (anything else is not looked up).
fn well_formed(raw: &str) -> bool {
    raw.len() == CODE_LEN && raw.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The address of a link under the service's public address.
pub fn url(public_url: &str, code: &str) -> String {
    format!("{}/r/{code}", public_url.trim_end_matches('/'))
}

/// The codes of these (campaign, resident) pairs, created where missing. Two dispatchers
/// creating the same pair at once both end with the one code that was stored first.
pub async fn ensure(
    db: &impl ConnectionTrait,
    privacy: &Privacy,
    pairs: &[(i32, i32)],
) -> AppResult<HashMap<(i32, i32), String>> {
    let mut found = read(db, privacy, pairs).await?;
    let missing: Vec<(i32, i32)> = pairs
        .iter()
        .copied()
        .filter(|p| !found.contains_key(p))
        .collect();
    if missing.is_empty() {
        return Ok(found);
    }
    let now = Utc::now();
    for chunk in missing.chunks(200) {
        let mut sql = Sql::new(db.get_database_backend());
        sql.push(
            "INSERT INTO resident_links (campaign_id, resident_id, code_index, code_enc, \
             created_at) VALUES ",
        );
        for (i, (campaign_id, resident_id)) in chunk.iter().enumerate() {
            let code = new_code();
            sql.push(if i == 0 { "(" } else { ", (" })
                .bind(*campaign_id)
                .push(", ")
                .bind(*resident_id)
                .push(", ")
                .bind(privacy.blind_index(Field::LinkCode, &code))
                .push(", ")
                .bind(privacy.encrypt(Field::LinkCode, &code))
                .push(", ")
                .bind(now)
                .push(")");
        }
        sql.push(" ON CONFLICT DO NOTHING");
        db.execute_raw(sql.build()).await?;
    }
    found.extend(read(db, privacy, &missing).await?);
    Ok(found)
}

async fn read(
    db: &impl ConnectionTrait,
    privacy: &Privacy,
    pairs: &[(i32, i32)],
) -> AppResult<HashMap<(i32, i32), String>> {
    let mut by_campaign: HashMap<i32, Vec<i32>> = HashMap::new();
    for (campaign_id, resident_id) in pairs {
        by_campaign
            .entry(*campaign_id)
            .or_default()
            .push(*resident_id);
    }
    let mut found = HashMap::new();
    for (campaign_id, residents) in by_campaign {
        for chunk in residents.chunks(500) {
            let mut sql = Sql::new(db.get_database_backend());
            sql.push("SELECT resident_id, code_enc FROM resident_links WHERE campaign_id = ")
                .bind(campaign_id)
                .push(" AND resident_id IN ")
                .bind_list(chunk.iter().copied());
            for row in Sealed::find_by_statement(sql.build()).all(db).await? {
                let code = privacy
                    .decrypt(Field::LinkCode, &row.code_enc)
                    .map_err(|e| anyhow::anyhow!("resident link code: {e}"))?;
                found.insert((campaign_id, row.resident_id), code);
            }
        }
    }
    Ok(found)
}

/// An opened link: the resident it belongs to and its campaign.
#[derive(Debug, Clone)]
pub struct Link {
    pub campaign: Campaign,
    pub resident: residents::Model,
}

impl Link {
    /// A link works while its campaign is open.
    pub fn expired(&self) -> bool {
        !self.campaign.is_open()
    }

    /// Refuses an action on a link whose campaign has closed.
    pub fn still_open(&self) -> AppResult<()> {
        if self.expired() {
            return Err(AppError::refused(
                "link_expired",
                "本次体检工作已经结束，链接已失效",
            ));
        }
        Ok(())
    }

    pub fn actor(&self) -> AppResult<Actor> {
        let village = AreaCode::parse(&self.resident.village_code)
            .map_err(|e| anyhow::anyhow!("stored village code: {e}"))?;
        Ok(Actor::resident_link(village))
    }

    pub fn area(&self) -> Option<AreaCode> {
        AreaCode::parse(&self.resident.village_code).ok()
    }
}

/// The link with this code, if there is one (expired or not).
pub async fn open(
    db: &impl ConnectionTrait,
    privacy: &Privacy,
    code: &str,
) -> AppResult<Option<Link>> {
    if !well_formed(code) {
        return Ok(None);
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT campaign_id, resident_id FROM resident_links WHERE code_index = ")
        .bind(privacy.blind_index(Field::LinkCode, code));
    let Some(LinkRow {
        campaign_id,
        resident_id,
    }) = LinkRow::find_by_statement(sql.build()).one(db).await?
    else {
        return Ok(None);
    };
    let Some(resident) = residents::Entity::find_by_id(resident_id).one(db).await? else {
        return Ok(None);
    };
    let campaign = campaign::get(db, campaign_id).await?;
    Ok(Some(Link { campaign, resident }))
}

/// What the resident's page shows.
#[derive(Debug, Clone, Serialize)]
pub struct LinkPage {
    /// The name with all but its first character hidden (张*).
    pub name: String,
    pub campaign_name: String,
    pub appointment: Option<AppointmentInfo>,
    /// Opted out of every channel.
    pub opted_out: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppointmentInfo {
    pub institution_name: String,
    pub institution_address: Option<String>,
    pub day: NaiveDate,
    /// e.g. `12月31日 星期四`.
    pub day_label: String,
    /// booked, attended, no_show or cancelled.
    pub status: String,
    pub status_label: &'static str,
    /// Still ahead, so it can be confirmed or moved.
    pub active: bool,
    pub confirmed: bool,
    /// Other days of the same institution with free places.
    pub free_days: Vec<FreeDay>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FreeDay {
    pub day: NaiveDate,
    pub label: String,
    pub remaining: i32,
}

/// `张伟` → `张*`, `玛依拉·胡安` → `玛**`.
pub fn masked_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => {
            let rest = chars.count();
            format!("{first}{}", "*".repeat(rest.min(2)))
        }
        None => String::new(),
    }
}

/// e.g. `12月31日 星期四`.
pub fn day_label(day: NaiveDate) -> String {
    format!(
        "{} 星期{}",
        crate::time::month_day(day),
        crate::time::weekday(day)
    )
}

/// The page of an open link: the resident's appointment of the campaign (the active one, or
/// else the latest) and the days it could move to.
pub async fn page(db: &impl ConnectionTrait, link: &Link) -> AppResult<LinkPage> {
    let r = &link.resident;
    let latest = appointments::Entity::find()
        .filter(appointments::Column::CampaignId.eq(link.campaign.id()))
        .filter(appointments::Column::ResidentId.eq(r.id))
        .order_by_desc(appointments::Column::Id)
        .all(db)
        .await?;
    let chosen = latest
        .iter()
        .find(|a| a.status == "booked")
        .or_else(|| latest.first());
    let appointment = match chosen {
        Some(a) => {
            let institution = institution::find(db, a.institution_id).await?;
            let active = a.status == "booked";
            let free_days = if active {
                free_days(db, &link.campaign, &institution, a.day).await?
            } else {
                Vec::new()
            };
            Some(AppointmentInfo {
                institution_name: institution.name.clone(),
                institution_address: institution.address.clone(),
                day: a.day,
                day_label: day_label(a.day),
                status: a.status.clone(),
                status_label: crate::appointment::status_label(&a.status),
                active,
                confirmed: a.confirmed_at.is_some(),
                free_days,
            })
        }
        None => None,
    };
    Ok(LinkPage {
        name: masked_name(&r.name),
        campaign_name: link.campaign.model.name.clone(),
        appointment,
        opted_out: r.phone_opt_out && r.relative_opt_out && r.wechat_opt_out && r.email_opt_out,
    })
}

/// Days from today with free places at `institution`, other than `current`.
async fn free_days(
    db: &impl ConnectionTrait,
    campaign: &Campaign,
    institution: &institutions::Model,
    current: NaiveDate,
) -> AppResult<Vec<FreeDay>> {
    let Some(yesterday) = campaign.today().pred_opt() else {
        return Ok(Vec::new());
    };
    let days: Vec<DayView> =
        crate::appointment::proposals(db, campaign, institution, yesterday, 1).await?;
    Ok(days
        .into_iter()
        .filter(|d| d.day != current)
        .map(|d| FreeDay {
            label: day_label(d.day),
            day: d.day,
            remaining: d.remaining,
        })
        .collect())
}

pub fn not_active() -> AppError {
    AppError::refused("not_active", "您目前没有可以更改的预约")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_long_random_and_well_formed() {
        let a = new_code();
        let b = new_code();
        assert_eq!(a.len(), CODE_LEN);
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(a, b);
        assert!(!well_formed("short"));
        assert!(!well_formed("abcdefghijk/"));
    }

    #[test]
    fn names_and_days_read_as_on_the_page() {
        assert_eq!(masked_name("张伟"), "张*");
        assert_eq!(masked_name("玛依拉·胡安"), "玛**");
        assert_eq!(
            day_label(NaiveDate::from_ymd_opt(2026, 12, 31).unwrap()),
            "12月31日 星期四"
        );
        assert_eq!(url("https://a.example/", "abc"), "https://a.example/r/abc");
    }
}
