//! `outreach demo`: a demo county in a directory of its own — the area tree of 新源县,
//! synthetic residents, a campaign some weeks into its exam phase with every stage filled,
//! and one login per role — built through the service's own functions, then served.

mod data;
mod history;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use entities::users::Role;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sea_orm::{DatabaseConnection, EntityTrait, QuerySelect};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::area::AreaCode;
use crate::auth::{Actor, Scope};
use crate::campaign::{self, DateRange, NewCampaign, PhaseDates};
use crate::config::{DatabaseUrl, Settings};
use crate::contact::{ContactChannel, ContactUsed, NewAttempt, Outcome};
use crate::error::AppError;
use crate::outreach::callbacks::InboundSms;
use crate::privacy::{Field, Privacy};
use crate::refusal::{NewRegistration, Reason, Review, SignerRelation};
use crate::startup::{Application, shutdown_on_signals};
use crate::{appointment, db, exam, flows, institution, outreach, registry, users};

pub use data::{COUNTY_CODE, TOWNSHIPS};

/// Marks a directory as made by `outreach demo`, so `--reset` never empties another one.
const MARKER: &str = ".outreach-demo";
const DATABASE: &str = "outreach.db";
const LOGINS: &str = "logins.txt";
/// The days the campaign has run before today (its kick-off week, then the exam phase).
const DAYS_OPEN: i64 = 42;
const KICKOFF_DAYS: i64 = 7;

/// What `outreach demo` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub seed: u64,
    pub reset: bool,
    pub bind: Option<SocketAddr>,
    pub residents: usize,
    pub serve: bool,
}

/// A login printed for the newcomer.
#[derive(Debug, Clone)]
pub struct Login {
    pub role: &'static str,
    pub username: String,
    pub password: String,
    pub area: String,
}

/// Creates (or reuses) the demo directory, then serves it unless told not to.
pub async fn run(mut settings: Settings, options: Options) -> anyhow::Result<()> {
    prepare_dir(&options)?;
    let database = options.dir.join(DATABASE);
    settings.database_url = DatabaseUrl::new(format!("sqlite://{}?mode=rwc", database.display()));
    settings.privacy.key = None;
    settings.privacy.key_file = None;
    settings.messaging.sms_provider = "log".to_owned();
    settings.messaging.outbox.simulate_receipts = true;
    if let Some(bind) = options.bind {
        settings.bind = bind;
    }
    if settings.http.public_url.is_none() {
        // The residents' links in the demo's messages open the demo itself.
        let mut at = settings.bind;
        if at.ip().is_unspecified() {
            at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        settings.http.public_url = Some(format!("http://{at}"));
    }

    let logins_file = options.dir.join(LOGINS);
    let (db, logins) = if logins_file.exists() {
        let db = db::connect_and_migrate(&settings).await?;
        println!(
            "使用已有的演示目录 / reusing the demo in {}",
            options.dir.display()
        );
        (db, std::fs::read_to_string(&logins_file)?)
    } else {
        let started = Instant::now();
        let db = db::connect_and_migrate(&settings).await?;
        let logins = build(&db, &settings, &options).await?;
        let text = logins_text(&logins);
        write_private(&logins_file, &text)?;
        println!(
            "演示数据已生成 / demo data built in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            options.dir.display()
        );
        (db, text)
    };
    if !options.serve {
        println!();
        print!("{logins}");
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone()).context("installing signal handlers")?;
    let app = Application::build_with_db(settings, db).await?;
    let address = app.local_addr();
    println!();
    println!("outreach 演示正在运行 / demo listening on http://{address}");
    println!();
    print!("{logins}");
    println!(
        "  curl -s -X POST http://{address}/api/v1/auth/login -H 'content-type: application/json' \\"
    );
    println!("       -d '{{\"username\":\"<用户名>\",\"password\":\"<密码>\"}}'");
    if let Some(link) = sample_link(app.state()).await? {
        println!();
        println!("  居民预约链接示例 / a resident's own appointment page: {link}");
    }
    println!();
    app.run_until_stopped(shutdown).await?;
    Ok(())
}

/// The link of one resident with an active appointment, as their messages carry it.
async fn sample_link(state: &crate::state::AppState) -> anyhow::Result<Option<String>> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let Some(public_url) = &state.settings.http.public_url else {
        return Ok(None);
    };
    let Some(booked) = entities::appointments::Entity::find()
        .filter(entities::appointments::Column::Status.eq("booked"))
        .one(&state.db)
        .await?
    else {
        return Ok(None);
    };
    let pair = (booked.campaign_id, booked.resident_id);
    let codes = outreach::links::ensure(&state.db, &state.privacy, &[pair])
        .await
        .map_err(|e| anyhow::anyhow!("resident link: {e}"))?;
    Ok(codes
        .get(&pair)
        .map(|code| outreach::links::url(public_url, code)))
}

/// Empties the directory for `--reset` (only one made by the demo), creates it when missing.
fn prepare_dir(options: &Options) -> anyhow::Result<()> {
    let dir = &options.dir;
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        let ours = dir.join(MARKER).exists();
        if !empty && !ours {
            anyhow::bail!(
                "{} exists and was not made by `outreach demo`; choose another --dir",
                dir.display()
            );
        }
        if options.reset && ours {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        } else if ours && !dir.join(LOGINS).exists() {
            // A build that stopped half way: start again.
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "made by `outreach demo`; `outreach demo --reset` may delete this directory\n",
    )?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn logins_text(logins: &[Login]) -> String {
    let mut out = String::from(
        "登录账户 / logins (角色 role · 用户名 username · 密码 password · 范围 area):\n",
    );
    for login in logins {
        out.push_str(&format!(
            "  {:<12} {:<20} {:<18} {}\n",
            login.role, login.username, login.password, login.area
        ));
    }
    out
}

/// A password of 16 characters with lower- and upper-case letters and digits.
fn strong_password() -> String {
    loop {
        let password = crate::auth::password::generate();
        let classes = [
            password.bytes().any(|b| b.is_ascii_lowercase()),
            password.bytes().any(|b| b.is_ascii_uppercase()),
            password.bytes().any(|b| b.is_ascii_digit()),
        ];
        if classes.iter().all(|c| *c) {
            return password;
        }
    }
}

fn failed(step: &'static str) -> impl Fn(AppError) -> anyhow::Error {
    move |e| match e {
        AppError::Unexpected(inner) => inner.context(step),
        other => anyhow::anyhow!("{step}: {other}"),
    }
}

fn actor_for(user: &entities::users::Model, institution_id: Option<i32>) -> anyhow::Result<Actor> {
    let scope = match &user.area_code {
        Some(code) => Scope::Within(AreaCode::parse(code)?),
        None => Scope::All,
    };
    Ok(Actor {
        user_id: Some(user.id),
        username: user.username.clone(),
        role: user.role,
        scope,
        request_id: None,
        token_id: None,
        institution_id,
    })
}

/// What happens to a resident in the demo campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Examined at their township's centre or the county hospital on that many days ago.
    Examined,
    /// A migrant examined where they live, recorded by the cadre with the place.
    ExaminedElsewhere,
    Refused,
    /// Booked for a day from today on.
    Booked,
    /// Booked for a day last week, and did not come.
    Missed,
    Reached,
    Notified,
    Untouched,
}

fn fate(rng: &mut StdRng, person: &data::Person, reference_date: NaiveDate) -> Fate {
    // Born after the campaign's reference date: not in this year's campaign.
    if person.birth > reference_date || matches!(person.special, Some("deceased" | "moved_out")) {
        return Fate::Untouched;
    }
    let draw = rng.random_range(0..1000);
    let away = person.migrant.is_some();
    match draw {
        0..430 if away => Fate::ExaminedElsewhere,
        0..520 if !away => Fate::Examined,
        520..536 => Fate::Refused,
        536..548 if !away => Fate::Missed,
        548..620 if !away => Fate::Booked,
        620..700 => Fate::Reached,
        700..790 => Fate::Notified,
        _ => Fate::Untouched,
    }
}

/// A local instant `days_ago` days before today at a working hour.
fn working_time(
    campaign: &campaign::Campaign,
    today: NaiveDate,
    days_ago: i64,
    rng: &mut StdRng,
) -> DateTime<Utc> {
    let time = NaiveTime::from_hms_opt(rng.random_range(9..19), rng.random_range(0..60), 0)
        .unwrap_or(NaiveTime::MIN);
    crate::time::at_local(campaign.timezone, today - Duration::days(days_ago), time)
}

/// Builds the whole demo county in `db` and returns the logins.
async fn build(
    db: &DatabaseConnection,
    settings: &Settings,
    options: &Options,
) -> anyhow::Result<Vec<Login>> {
    let step = Instant::now();
    let say = |what: &str| {
        eprintln!("  {what} ({:.1} s)", step.elapsed().as_secs_f64());
    };
    let mut rng = StdRng::seed_from_u64(options.seed);
    let privacy = Arc::new(Privacy::load(settings)?);
    let cli = Actor::cli();
    let today = crate::time::today();

    // The area tree.
    flows::areas::import_areas(db, &cli, data::areas_csv().as_bytes())
        .await
        .map_err(failed("areas"))?;

    // The registry, through the same import as `outreach import residents`.
    let (csv, people) = data::residents(&mut rng, options.residents, today);
    let file = options.dir.join("residents.csv");
    std::fs::write(&file, csv)?;
    let imported = flows::registry::import_residents(
        db,
        privacy.clone(),
        &cli,
        &file,
        None,
        registry::Progress::Silent,
    )
    .await
    .map_err(failed("residents"))?;
    anyhow::ensure!(
        imported.summary.rejected == 0,
        "the demo registry had rejected rows: {:?}",
        imported.rejected_rows.first()
    );
    say(&format!("居民 residents: {}", imported.summary.imported));
    let ids: HashMap<Vec<u8>, i32> = entities::residents::Entity::find()
        .select_only()
        .column(entities::residents::Column::IdIndex)
        .column(entities::residents::Column::Id)
        .into_tuple::<(Vec<u8>, i32)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let resident_ids: Vec<i32> = people
        .iter()
        .map(|p| {
            ids.get(&privacy.blind_index(Field::ResidentId, &p.id_number))
                .copied()
                .context("an imported resident was not found")
        })
        .collect::<anyhow::Result<_>>()?;

    // Institutions: each township's health centre, the county hospitals.
    let mut centres = Vec::new();
    for township in TOWNSHIPS {
        let created = flows::institutions::create(
            db,
            &cli,
            institution::NewInstitution {
                code: format!("wsy-{}", township.centre),
                name: format!("{}卫生院", township.name.trim_end_matches(['镇', '乡'])),
                kind: institution::Kind::TownshipCentre,
                area_code: township.code.to_owned(),
                daily_capacity: 60,
                closed_weekdays: vec![7],
                serves: vec![township.code.to_owned()],
                address: Some(format!("{}{}", data::COUNTY_NAME, township.name)),
            },
        )
        .await
        .map_err(failed("institutions"))?;
        centres.push(created);
    }
    let hospital = flows::institutions::create(
        db,
        &cli,
        institution::NewInstitution {
            code: "xy-renmin".to_owned(),
            name: "新源县人民医院".to_owned(),
            kind: institution::Kind::CountyHospital,
            area_code: COUNTY_CODE.to_owned(),
            daily_capacity: 150,
            closed_weekdays: Vec::new(),
            serves: vec![COUNTY_CODE.to_owned()],
            address: Some("新源县新源镇健康路".to_owned()),
        },
    )
    .await
    .map_err(failed("institutions"))?;
    flows::institutions::create(
        db,
        &cli,
        institution::NewInstitution {
            code: "xy-zhongyi".to_owned(),
            name: "新源县中医医院".to_owned(),
            kind: institution::Kind::CountyHospital,
            area_code: COUNTY_CODE.to_owned(),
            daily_capacity: 80,
            closed_weekdays: vec![7],
            serves: vec![TOWNSHIPS[0].code.to_owned(), TOWNSHIPS[1].code.to_owned()],
            address: Some("新源县新源镇".to_owned()),
        },
    )
    .await
    .map_err(failed("institutions"))?;
    say("机构 institutions");

    // Users: one per role for the newcomer, and the township officers who witness refusals.
    let mut logins = Vec::new();
    let first = &TOWNSHIPS[0];
    let cadre_village = data::village_code(first, 4);
    let wanted: [(&'static str, &str, Role, String, Option<String>); 5] = [
        (
            "office",
            "admin",
            Role::Office,
            COUNTY_CODE.to_owned(),
            None,
        ),
        (
            "township",
            "xinyuan.zhen",
            Role::Township,
            first.code.to_owned(),
            None,
        ),
        (
            "cadre",
            "cadre.almale",
            Role::Cadre,
            cadre_village.clone(),
            None,
        ),
        (
            "institution",
            "clinic.renmin",
            Role::Institution,
            COUNTY_CODE.to_owned(),
            Some("xy-renmin".to_owned()),
        ),
        (
            "auditor",
            "auditor",
            Role::Auditor,
            COUNTY_CODE.to_owned(),
            None,
        ),
    ];
    let mut accounts = HashMap::new();
    for (label, username, role, area_code, institution_code) in wanted {
        let password = strong_password();
        let created = flows::accounts::create(
            db,
            &cli,
            users::NewUser {
                username: username.to_owned(),
                display_name: None,
                role,
                area_code: area_code.clone(),
                password: Some(password.clone()),
                institution: institution_code,
            },
        )
        .await
        .map_err(failed("users"))?;
        accounts.insert(label, created.user);
        logins.push(Login {
            role: label,
            username: username.to_owned(),
            password,
            area: area_code,
        });
    }
    let mut officers = Vec::new();
    for (i, township) in TOWNSHIPS.iter().enumerate() {
        let user = if i == 0 {
            accounts["township"].clone()
        } else {
            flows::accounts::create(
                db,
                &cli,
                users::NewUser {
                    username: format!("{}.officer", township.centre),
                    display_name: Some(format!("{}体检专干", township.name)),
                    role: Role::Township,
                    area_code: township.code.to_owned(),
                    password: None,
                    institution: None,
                },
            )
            .await
            .map_err(failed("users"))?
            .user
        };
        officers.push(actor_for(&user, None)?);
    }
    let office = actor_for(&accounts["office"], None)?;
    let cadre = actor_for(&accounts["cadre"], None)?;
    say("账户 users");

    // The campaign: kick-off six weeks ago, exams from five weeks ago for two months more.
    let opened_on = today - Duration::days(DAYS_OPEN);
    let exams_from = opened_on + Duration::days(KICKOFF_DAYS);
    let year = exams_from.year();
    let jan1 = NaiveDate::from_ymd_opt(year, 1, 1).context("a valid year")?;
    let range = |from: NaiveDate, to: NaiveDate| Some(DateRange { from, to });
    let campaign = flows::campaigns::create(
        db,
        &office,
        NewCampaign {
            year,
            name: Some(format!("{year}年新源县全民健康体检")),
            reference_date: Some(jan1),
            timezone: None,
            // The weeks the demo stands for went out in the daytime, whatever the hour it is
            // built at: quiet hours far from now until its messages are out (the usual
            // 21:00–08:00 are set after them, below).
            quiet_hours: Some(away_from_now()),
            cohorts: None,
            targets: None,
            phases: PhaseDates {
                survey: range(opened_on, opened_on + Duration::days(3)),
                kickoff: range(
                    opened_on + Duration::days(4),
                    exams_from - Duration::days(1),
                ),
                exams: range(exams_from, today + Duration::days(56)),
                catch_up: range(today + Duration::days(57), today + Duration::days(70)),
                acceptance: range(today + Duration::days(71), today + Duration::days(80)),
            },
            refusal_rule: None,
        },
    )
    .await
    .map_err(failed("campaign"))?;
    let campaign_id = campaign.id();
    flows::campaigns::open(db, &office, campaign_id)
        .await
        .map_err(failed("campaign"))?;
    let campaign = campaign::get(db, campaign_id)
        .await
        .map_err(failed("campaign"))?;
    say("体检工作 campaign");

    // Key groups the township health centres follow: hypertension and diabetes among the
    // older residents, set as a cadre or clinic would, one resident at a time.
    let mut tagged = 0;
    let middle_aged = today - Duration::days(35 * 365);
    for (i, person) in people.iter().enumerate() {
        if person.birth > middle_aged || matches!(person.special, Some("deceased" | "moved_out")) {
            continue;
        }
        let mut tags = Vec::new();
        if rng.random_bool(0.18) {
            tags.push("hypertension".to_owned());
        }
        if rng.random_bool(0.07) {
            tags.push("diabetes".to_owned());
        }
        if tags.is_empty() {
            continue;
        }
        flows::registry::set_tags(
            db,
            &officers[person.township],
            resident_ids[i],
            campaign::tags::TagSet { tags },
        )
        .await
        .map_err(failed("key groups"))?;
        tagged += 1;
    }
    say(&format!("重点人群 key groups: {tagged}"));

    // Each resident's fate, drawn in registry order (the seed decides it all).
    let fates: Vec<Fate> = people.iter().map(|p| fate(&mut rng, p, jan1)).collect();
    let exam_days = (today - exams_from).num_days().max(1);

    // Contact attempts by the cadres, on the days they happened.
    let mut attempts = 0usize;
    for (i, person) in people.iter().enumerate() {
        let plan: &[(Outcome, i64)] = match fates[i] {
            Fate::Reached | Fate::Booked | Fate::Missed => &[(Outcome::ReachedAgreed, 0)],
            Fate::Notified => &[(Outcome::NoAnswer, 0)],
            Fate::Refused => &[
                (Outcome::NoAnswer, 0),
                (Outcome::ReachedRefused, 3),
                (Outcome::ReachedRefused, 6),
            ],
            _ => &[],
        };
        if plan.is_empty() {
            continue;
        }
        let first_day = rng.random_range(7..exam_days.max(8) + 1);
        for (outcome, later) in plan {
            let days_ago = (first_day - later).max(1);
            let (channel, contact) = if person.has_phone {
                (ContactChannel::PhoneCall, ContactUsed::OwnPhone)
            } else if rng.random_bool(0.5) {
                (ContactChannel::PhoneCall, ContactUsed::RelativePhone)
            } else {
                (ContactChannel::HomeVisit, ContactUsed::InPerson)
            };
            let officer = if person.village_code == cadre_village {
                &cadre
            } else {
                &officers[person.township]
            };
            crate::flows::attempts::record(
                db,
                officer,
                campaign_id,
                resident_ids[i],
                NewAttempt {
                    attempted_at: Some(working_time(&campaign, today, days_ago, &mut rng)),
                    channel,
                    contact,
                    outcome: *outcome,
                    note: None,
                    client_key: None,
                },
            )
            .await
            .map_err(failed("attempts"))?;
            attempts += 1;
        }
    }
    say(&format!("联系记录 attempts: {attempts}"));

    // Exams: the checkup system's list, imported as the office does; the days spread over
    // the exam phase so far (more in the later weeks as the campaign gathers pace).
    let mut exam_csv = String::from("id_number,exam_date,institution\n");
    for (i, person) in people.iter().enumerate() {
        if fates[i] != Fate::Examined {
            continue;
        }
        let back = rng.random_range(0..exam_days * exam_days);
        let days_ago = exam_days - (back as f64).sqrt() as i64;
        let day = today - Duration::days(days_ago.clamp(0, exam_days));
        let code = if person.township == 0 || rng.random_bool(0.15) {
            "xy-renmin".to_owned()
        } else {
            format!("wsy-{}", TOWNSHIPS[person.township].centre)
        };
        exam_csv.push_str(&format!("{},{day},{code}\n", person.id_number));
    }
    let exams =
        crate::flows::exams::import(db, &privacy, &office, campaign_id, exam_csv.as_bytes())
            .await
            .map_err(failed("exams"))?;
    anyhow::ensure!(
        exams.summary.rejected == 0,
        "the demo exam list had rejected rows: {:?}",
        exams.rejected_rows.first()
    );
    // Migrants examined where they live, on the cadre's word and the place.
    let mut elsewhere = 0;
    for (i, person) in people.iter().enumerate() {
        if fates[i] != Fate::ExaminedElsewhere || elsewhere >= options.residents / 50 {
            continue;
        }
        let place = match person.migrant {
            Some("out_of_region" | "official_away") => "上海市浦东新区社区卫生服务中心",
            Some("student_away") => "新疆大学校医院",
            _ => "乌鲁木齐市天山区社区卫生服务中心",
        };
        crate::flows::exams::record_elsewhere(
            db,
            &officers[person.township],
            campaign_id,
            resident_ids[i],
            exam::ElsewhereExam {
                examined_on: today - Duration::days(rng.random_range(1..exam_days + 1)),
                place: place.to_owned(),
                examiner: "居住地社区卫生服务中心".to_owned(),
                note: Some("本人微信发来体检表照片".to_owned()),
                evidence_base64: None,
                evidence_name: None,
                evidence_type: None,
            },
        )
        .await
        .map_err(failed("exams elsewhere"))?;
        elsewhere += 1;
    }
    say(&format!(
        "体检 exams: {} + {elsewhere}",
        exams.summary.imported
    ));

    // Bookings from today on, in groups per village as cadres make them.
    let reminders = &settings.messaging.outbox.reminders;
    let mut groups: HashMap<(usize, String), Vec<i32>> = HashMap::new();
    for (i, person) in people.iter().enumerate() {
        if fates[i] == Fate::Booked {
            groups
                .entry((person.township, person.village_code.clone()))
                .or_default()
                .push(resident_ids[i]);
        }
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort();
    let mut booked = 0;
    let mut booked_today = Vec::new();
    // Each township's groups take the days in turn, so every institution has groups today
    // and tomorrow for the clinic's pages.
    let mut turns: HashMap<usize, i64> = HashMap::new();
    for ((township, _), members) in groups {
        let institution_id = if township == 0 {
            hospital.id
        } else {
            centres[township].id
        };
        for chunk in members.chunks(25) {
            let turn = turns.entry(township).or_default();
            // The first groups alternate between today and tomorrow, the rest spread over
            // the coming days.
            let offset = if *turn < 6 {
                *turn % 2
            } else {
                (*turn + township as i64) % 12
            };
            let mut day = today + Duration::days(offset);
            *turn += 1;
            if township > 0 && day.weekday() == chrono::Weekday::Sun {
                day += Duration::days(1);
            }
            let booking = crate::flows::booking::book(
                db,
                &officers[township],
                campaign_id,
                appointment::BookingRequest {
                    institution_id,
                    day,
                    resident_ids: chunk.to_vec(),
                    client_key: None,
                },
                reminders,
            )
            .await;
            match booking {
                Ok(_) => {
                    booked += chunk.len();
                    if day == today {
                        booked_today.push((institution_id, chunk.to_vec()));
                    }
                }
                // A full day is what a cadre meets too: that group waits for another day.
                Err(AppError::Refused { .. }) => {}
                Err(e) => return Err(failed("bookings")(e)),
            }
        }
    }
    // Last week's missed appointments: booked, moved back (see `history`), found missed.
    let mut missed: HashMap<usize, Vec<i32>> = HashMap::new();
    for (i, person) in people.iter().enumerate() {
        if fates[i] == Fate::Missed {
            missed
                .entry(person.township)
                .or_default()
                .push(resident_ids[i]);
        }
    }
    let mut missed: Vec<_> = missed.into_iter().collect();
    missed.sort();
    for (township, members) in missed {
        let place = if township == 0 {
            &hospital
        } else {
            &centres[township]
        };
        for chunk in members.chunks(20) {
            let booking = crate::flows::booking::book(
                db,
                &officers[township],
                campaign_id,
                appointment::BookingRequest {
                    institution_id: place.id,
                    day: today,
                    resident_ids: chunk.to_vec(),
                    client_key: None,
                },
                reminders,
            )
            .await;
            match booking {
                Ok(_) => {}
                Err(AppError::Refused { .. }) => continue,
                Err(e) => return Err(failed("bookings")(e)),
            }
            let institution = institution::find(db, place.id)
                .await
                .map_err(failed("bookings"))?;
            let day = today - Duration::days(rng.random_range(2..9));
            let booked_at = working_time(&campaign, day, 3, &mut rng);
            history::move_bookings_back(db, campaign_id, &institution, chunk, day, booked_at)
                .await?;
        }
    }
    let no_shows = crate::flows::booking::mark_no_shows(db, reminders)
        .await
        .map_err(failed("no-shows"))?;

    // Some of today's appointments have come already.
    let mut attended = 0;
    for (institution_id, members) in &booked_today {
        for resident_id in members.iter().take(4) {
            crate::flows::exams::record_at_institution(
                db,
                &office,
                campaign_id,
                exam::InstitutionExam {
                    resident_id: *resident_id,
                    examined_on: today,
                    institution_id: Some(*institution_id),
                },
            )
            .await
            .map_err(failed("attendance"))?;
            attended += 1;
        }
    }
    say(&format!(
        "预约 bookings: {booked}, {attended} attended today, {no_shows} missed"
    ));

    // Refusals: registered with a signature by the township officer who witnessed them;
    // the office has confirmed most, returned a few, and some wait for review.
    let mut refusals = Vec::new();
    for (i, person) in people.iter().enumerate() {
        if fates[i] != Fate::Refused {
            continue;
        }
        let n = refusals.len() as i64;
        let witness = if person.village_code == cadre_village {
            &cadre
        } else {
            &officers[person.township]
        };
        let registration = crate::flows::refusals::register(
            db,
            &settings.signatures,
            witness,
            campaign_id,
            resident_ids[i],
            NewRegistration {
                reason: if n % 5 == 4 {
                    Reason::SeriouslyIll
                } else {
                    Reason::Unwilling
                },
                reason_text: None,
                signer_name: "本人".to_owned(),
                signer_relation: SignerRelation::Own,
                signature_png: None,
                signature_svg: None,
                signature_strokes: Some(signature(&mut rng)),
                witness_user_id: None,
                attempt_ids: None,
                location: None,
                client_key: None,
            },
        )
        .await
        .map_err(failed("refusals"))?;
        refusals.push(registration.id);
    }
    let mut confirmed = 0;
    let mut returned = 0;
    for (n, id) in refusals.iter().enumerate() {
        match n % 10 {
            0..6 => {
                crate::flows::refusals::confirm(db, &office, *id, Review::default())
                    .await
                    .map_err(failed("refusal review"))?;
                confirmed += 1;
            }
            6 => {
                crate::flows::refusals::return_for_correction(
                    db,
                    &office,
                    *id,
                    Review {
                        note: Some("签字不清晰，请补充第二次联系记录后重新登记".to_owned()),
                    },
                )
                .await
                .map_err(failed("refusal review"))?;
                returned += 1;
            }
            _ => {}
        }
    }
    say(&format!(
        "拒检登记 refusals: {} ({confirmed} confirmed, {returned} returned)",
        refusals.len()
    ));

    // Waves for the migrants: one sent now, one waiting for the holidays, one cancelled.
    let wave = crate::flows::messaging::waves::create(
        db,
        &office,
        campaign_id,
        outreach::waves::NewWave {
            name: "元旦返乡体检通知".to_owned(),
            audience: Default::default(),
            window_from: today,
            window_to: today + Duration::days(20),
            send_at: None,
        },
    )
    .await
    .map_err(failed("waves"))?;
    crate::flows::messaging::waves::create(
        db,
        &office,
        campaign_id,
        outreach::waves::NewWave {
            name: "春节返乡体检通知".to_owned(),
            audience: Default::default(),
            window_from: today + Duration::days(40),
            window_to: today + Duration::days(56),
            send_at: Some(Utc::now() + Duration::days(30)),
        },
    )
    .await
    .map_err(failed("waves"))?;
    let cancelled = crate::flows::messaging::waves::create(
        db,
        &office,
        campaign_id,
        outreach::waves::NewWave {
            name: "则克台镇外出学生通知（重复，已取消）".to_owned(),
            audience: outreach::waves::Audience {
                area: Some(TOWNSHIPS[1].code.to_owned()),
                ..Default::default()
            },
            window_from: today + Duration::days(30),
            window_to: today + Duration::days(45),
            send_at: Some(Utc::now() + Duration::days(20)),
        },
    )
    .await
    .map_err(failed("waves"))?;
    crate::flows::messaging::waves::cancel(db, &office, cancelled.id)
        .await
        .map_err(failed("waves"))?;
    // Two notices to one township's migrants today, so that a third wave to the whole county
    // meets the daily cap there: its messages to that township wait for tomorrow while the
    // rest go out, and it stays "sending" through the day.
    let busy = &TOWNSHIPS[1];
    for name in ["外出务工人员专项通知", "外出人员体检二次提醒"] {
        crate::flows::messaging::waves::create(
            db,
            &office,
            campaign_id,
            outreach::waves::NewWave {
                name: format!("{}{name}", busy.name),
                audience: outreach::waves::Audience {
                    area: Some(busy.code.to_owned()),
                    ..Default::default()
                },
                window_from: today,
                window_to: today + Duration::days(20),
                send_at: None,
            },
        )
        .await
        .map_err(failed("waves"))?;
    }

    // Everything due goes out through the `log` channel, which reports it delivered.
    let dispatcher = crate::startup::dispatcher_for(settings, db.clone())?;
    let sent = dispatcher.drain().await.map_err(failed("dispatch"))?;
    say(&format!(
        "消息 messages: wave {} planned, {} sent, {} delivered",
        wave.planned, sent.sent, sent.delivered
    ));

    let capped = crate::flows::messaging::waves::create(
        db,
        &office,
        campaign_id,
        outreach::waves::NewWave {
            name: "全县外出人员补充通知（超出每日条数的次日发送）".to_owned(),
            audience: Default::default(),
            window_from: today + Duration::days(1),
            window_to: today + Duration::days(21),
            send_at: None,
        },
    )
    .await
    .map_err(failed("waves"))?;
    let more = dispatcher.drain().await.map_err(failed("dispatch"))?;
    say(&format!(
        "消息 messages: a wave of {} sent in part ({} sent, {} held for tomorrow)",
        capped.planned, more.sent, more.held
    ));

    // Replies to the wave: 1 (will come), 2 (another day), TD (no more messages).
    let mut replies = 0;
    let mut written: Vec<(String, &str)> = Vec::new();
    for person in &people {
        if person.migrant.is_none() || !person.has_phone || !rng.random_bool(0.12) {
            continue;
        }
        let Some(phone) = person.phone.clone() else {
            continue;
        };
        let text = match rng.random_range(0..20) {
            0..12 => "1",
            12..17 => "2",
            _ => "TD",
        };
        written.push((phone, text));
    }
    // Residents of the demo cadre's village who wrote back, so their task list is not empty:
    // "2" (another day, a reschedule request when booked) and questions nobody can match.
    let questions = [
        "2",
        "请问体检要空腹吗",
        "2",
        "我在外地打工，过年回来再检可以吗",
    ];
    let writers = people
        .iter()
        .filter(|p| p.village_code == cadre_village)
        .filter_map(|p| p.phone.clone())
        .take(questions.len());
    written.extend(writers.zip(questions));
    for (phone, text) in written {
        let reply = InboundSms {
            provider: "log",
            from_phone: phone,
            text: text.to_owned(),
            at: None,
            provider_id: None,
            signature: None,
        };
        crate::flows::replies::apply_reply(db, &privacy, &reply)
            .await
            .map_err(failed("replies"))?;
        replies += 1;
    }
    // The confirmations the opt-outs asked for go out too.
    dispatcher.drain().await.map_err(failed("dispatch"))?;
    say(&format!("回复 replies: {replies}"));
    flows::campaigns::update(
        db,
        &office,
        campaign_id,
        campaign::CampaignChanges {
            quiet_hours: Some(campaign::QuietHours {
                start: "21:00".to_owned(),
                end: "08:00".to_owned(),
            }),
            ..Default::default()
        },
    )
    .await
    .map_err(failed("campaign"))?;

    // The days before today, as the service would have recorded them (see `history`).
    history::backdate(db, &campaign, opened_on).await?;
    let campaign = campaign::get(db, campaign_id)
        .await
        .map_err(failed("campaign"))?;
    crate::flows::reports::refresh(db, &campaign, (DAYS_OPEN + 1) as u32)
        .await
        .map_err(failed("reports"))?;
    say("报表 reports");
    Ok(logins)
}

/// A minute of quiet hours half a day from now (Beijing time), so that the demo's messages go
/// out while it is built at any hour.
fn away_from_now() -> campaign::QuietHours {
    let at = Utc::now().with_timezone(&crate::time::DEFAULT_ZONE) + Duration::hours(12);
    let until = at + Duration::minutes(1);
    campaign::QuietHours {
        start: at.format("%H:%M").to_string(),
        end: until.format("%H:%M").to_string(),
    }
}

/// Signature-pad strokes, a little different for every signer.
fn signature(rng: &mut StdRng) -> serde_json::Value {
    let mut points = Vec::new();
    let mut x = 20;
    while x < 380 {
        points.push(json!([x, rng.random_range(30..120)]));
        x += rng.random_range(25..60);
    }
    let mut second: Vec<serde_json::Value> = (0..4)
        .map(|k| json!([60 + k * 70, rng.random_range(60..140)]))
        .collect();
    second.shuffle(rng);
    json!({"width": 400, "height": 150, "strokes": [points, second]})
}
