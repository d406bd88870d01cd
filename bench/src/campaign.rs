//! The `enrol` and `book` scenarios: enrolling a registry into a campaign (one set-based
//! statement), and booking groups into institutions' days through the HTTP API with
//! parallel clients, checking afterwards that no day holds more than its capacity.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{Datelike, Duration, NaiveDate, Utc};
use outreach::auth::Actor;
use outreach::campaign::{DateRange, NewCampaign, PhaseDates};
use outreach::config::{DatabaseUrl, Secret, Settings};
use outreach::db::Sql;
use outreach::privacy::Privacy;
use outreach::registry::{MobilePhone, ProtectedPhone};
use outreach::startup::Application;
use outreach::{db, flows, institution, users};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Rng, areas_csv, bench_database, drop_database, peak_rss_mb, round, village_code};

const VILLAGES: u32 = 240;

async fn connect(url: &str) -> anyhow::Result<(Settings, DatabaseConnection)> {
    let mut settings = Settings {
        database_url: DatabaseUrl::new(url),
        bind: "127.0.0.1:0".parse()?,
        ..Settings::default()
    };
    settings.privacy.key = Some(Secret::new(outreach::privacy::new_key_base64()));
    settings.scheduler.enabled = false;
    let database = db::connect_and_migrate(&settings).await?;
    flows::areas::import_areas(&database, &Actor::cli(), areas_csv(VILLAGES).as_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("areas: {e}"))?;
    Ok((settings, database))
}

/// Who to seed.
pub struct Population {
    pub residents: u64,
    /// Out of 100: residents with a migrant type other than `local`.
    pub migrant_percent: u64,
    /// The migrant types, one picked at random for each migrant.
    pub migrant_types: &'static [&'static str],
    /// Each resident gets their own mobile number, encrypted and indexed as the import does.
    pub phones: Option<Arc<Privacy>>,
}

/// Writes the residents straight into the table (setup, not measured): valid shapes, random
/// blind indexes, birth dates from 1930 to last year, Mandarin speakers, no special
/// situation. Returns how many are migrants.
pub async fn seed_residents(
    database: &DatabaseConnection,
    population: &Population,
) -> anyhow::Result<u64> {
    use sea_orm::TransactionTrait;
    let backend = database.get_database_backend();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let epoch = NaiveDate::from_ymd_opt(1930, 1, 1).expect("valid date");
    let now = Utc::now();
    let mut migrants = 0;
    let txn = database.begin().await?;
    let mut done = 0;
    while done < population.residents {
        let batch = (population.residents - done).min(500);
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO residents (id_index, id_cipher, id_masked, name, sex, birth_date, \
             village_code, language, migrant_type, special, phone_cipher, phone_index, \
             phone_masked, phone_opt_out, relative_opt_out, wechat_opt_out, email_opt_out, \
             created_at, updated_at) VALUES ",
        );
        for i in 0..batch {
            let n = done + i;
            if i > 0 {
                sql.push(", ");
            }
            let mut index = [0u8; 16];
            index[..8].copy_from_slice(&rng.next().to_le_bytes());
            index[8..].copy_from_slice(&n.to_le_bytes());
            let migrant = if rng.below(100) < population.migrant_percent {
                migrants += 1;
                population.migrant_types[rng.below(population.migrant_types.len() as u64) as usize]
            } else {
                "local"
            };
            // 139 and eight digits of the resident's number: unique and valid.
            let phone = population.phones.as_ref().map(|privacy| {
                let mobile = MobilePhone::parse(&format!("139{n:08}"))
                    .expect("a valid synthetic mobile number");
                ProtectedPhone::new(privacy, &mobile)
            });
            sql.push("(")
                .bind(index.to_vec())
                .push(", ")
                .bind(vec![0u8; 44])
                .push(", ")
                .bind("6540**********0000")
                .push(", ")
                .bind("居民")
                .push(", ")
                .bind(if rng.below(2) == 0 { "M" } else { "F" })
                .push(", ")
                .bind(epoch + chrono::Days::new(rng.below(34_000)))
                .push(", ")
                .bind(village_code(rng.below(u64::from(VILLAGES)) as u32))
                .push(", ")
                .bind("zh")
                .push(", ")
                .bind(migrant)
                .push(", ")
                .bind(None::<String>)
                .push(", ")
                .bind(phone.as_ref().map(|p| p.cipher.clone()))
                .push(", ")
                .bind(phone.as_ref().map(|p| p.index.clone()))
                .push(", ")
                .bind(phone.as_ref().map(|p| p.masked.clone()))
                .push(", ")
                .bind(false)
                .push(", ")
                .bind(false)
                .push(", ")
                .bind(false)
                .push(", ")
                .bind(false)
                .push(", ")
                .bind(now)
                .push(", ")
                .bind(now)
                .push(")");
        }
        txn.execute_raw(sql.build()).await?;
        done += batch;
    }
    sea_orm::TransactionSession::commit(txn).await?;
    Ok(migrants)
}

/// A registry of `residents`, a tenth of them migrants from out of the region.
fn registry(residents: u64) -> Population {
    Population {
        residents,
        migrant_percent: 10,
        migrant_types: &["out_of_region"],
        phones: None,
    }
}

/// This year's campaign with an exam window from 1 January to four months from today.
pub fn new_campaign(today: NaiveDate) -> NewCampaign {
    let jan1 = NaiveDate::from_ymd_opt(today.year(), 1, 1).expect("valid date");
    let range = |from, to| Some(DateRange { from, to });
    let day = |n| today + Duration::days(n);
    NewCampaign {
        year: today.year(),
        name: None,
        reference_date: Some(jan1),
        timezone: None,
        quiet_hours: None,
        cohorts: None,
        targets: None,
        phases: PhaseDates {
            survey: range(jan1, jan1),
            kickoff: range(jan1, jan1),
            exams: range(jan1, day(120)),
            catch_up: range(day(121), day(130)),
            acceptance: range(day(131), day(140)),
        },
        refusal_rule: None,
    }
}

pub async fn enrol(residents: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, cleanup) = bench_database(dir.path()).await?;
    let result = run_enrol(&url, residents).await;
    drop_database(cleanup).await?;
    result
}

async fn run_enrol(url: &str, residents: u64) -> anyhow::Result<()> {
    let (_, database) = connect(url).await?;
    seed_residents(&database, &registry(residents)).await?;
    let today = outreach::time::today();
    let id = flows::campaigns::create(&database, &Actor::cli(), new_campaign(today))
        .await
        .map_err(|e| anyhow::anyhow!("campaign: {e}"))?
        .id();
    let started = Instant::now();
    let opened = flows::campaigns::open(&database, &Actor::cli(), id)
        .await
        .map_err(|e| anyhow::anyhow!("open: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(opened.enrolled == residents, "enrolled {}", opened.enrolled);
    println!(
        "{}",
        json!({
            "bench": "enrol",
            "database": db::backend_name(database.get_database_backend()),
            "items": opened.enrolled,
            "seconds": round(seconds),
            "per_sec": (opened.enrolled as f64 / seconds).round(),
            "peak_rss_mb": round(peak_rss_mb()),
        })
    );
    Ok(())
}

pub async fn book(
    residents: u64,
    group: usize,
    institutions: usize,
    clients: usize,
    capacity: i32,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, cleanup) = bench_database(dir.path()).await?;
    let result = run_book(&url, residents, group, institutions, clients, capacity).await;
    drop_database(cleanup).await?;
    result
}

#[derive(Default)]
struct Tally {
    booked: u64,
    retries: u64,
    failed: u64,
    latencies_ms: Vec<f64>,
}

async fn run_book(
    url: &str,
    residents: u64,
    group: usize,
    institutions: usize,
    clients: usize,
    capacity: i32,
) -> anyhow::Result<()> {
    let (settings, database) = connect(url).await?;
    seed_residents(&database, &registry(residents)).await?;
    let today = outreach::time::today();
    let campaign = flows::campaigns::create(&database, &Actor::cli(), new_campaign(today))
        .await
        .map_err(|e| anyhow::anyhow!("campaign: {e}"))?
        .id();
    flows::campaigns::open(&database, &Actor::cli(), campaign)
        .await
        .map_err(|e| anyhow::anyhow!("open: {e}"))?;
    let mut institution_ids = Vec::new();
    for i in 0..institutions {
        let created = flows::institutions::create(
            &database,
            &Actor::cli(),
            institution::NewInstitution {
                code: format!("BENCH-{i}"),
                name: format!("第{}卫生院", i + 1),
                kind: institution::Kind::TownshipCentre,
                area_code: "654025000000".to_owned(),
                daily_capacity: capacity,
                closed_weekdays: Vec::new(),
                serves: vec!["654025000000".to_owned()],
                address: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("institution: {e}"))?;
        institution_ids.push(created.id);
    }
    let password = "bench-office-password";
    flows::accounts::create(
        &database,
        &Actor::cli(),
        users::NewUser {
            username: "bench.office".to_owned(),
            display_name: None,
            role: entities::users::Role::Office,
            area_code: "654025000000".to_owned(),
            password: Some(password.to_owned()),
            institution: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("user: {e}"))?;

    let app = Application::build_with_db(settings, database.clone()).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = outreach::outreach::http_client::builder().build()?;
    let login: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "bench.office", "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("login failed: {login}"))?
        .to_owned();

    let ids: Vec<i32> = database
        .query_all_raw(Statement::from_string(
            database.get_database_backend(),
            "SELECT id FROM residents ORDER BY id",
        ))
        .await?
        .iter()
        .map(|row| row.try_get::<i32>("", "id"))
        .collect::<Result<_, _>>()?;
    let groups: Arc<Vec<Vec<i32>>> = Arc::new(ids.chunks(group).map(<[i32]>::to_vec).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let institution_ids = Arc::new(institution_ids);
    let first_day = today + Duration::days(1);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, token, base) = (client.clone(), token.clone(), base.clone());
        let (groups, next, institution_ids) =
            (groups.clone(), next.clone(), institution_ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                let Some(members) = groups.get(g) else {
                    return tally;
                };
                let institution = institution_ids[g % institution_ids.len()];
                let mut day = first_day;
                for _attempt in 0..60 {
                    let sent = Instant::now();
                    let response = client
                        .post(format!("{base}/api/v1/campaigns/{campaign}/bookings"))
                        .bearer_auth(&token)
                        .json(&json!({"institution_id": institution, "day": day, "resident_ids": members}))
                        .send()
                        .await;
                    tally.latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                    let Ok(response) = response else {
                        tally.failed += 1;
                        break;
                    };
                    let status = response.status();
                    if status == reqwest::StatusCode::CREATED {
                        tally.booked += members.len() as u64;
                        break;
                    }
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    // A full day answers with the next days that have room: take the first.
                    let proposed = body["error"]["details"]["proposals"][0]["day"]
                        .as_str()
                        .and_then(|d| d.parse::<NaiveDate>().ok());
                    match proposed {
                        Some(d) if status == reqwest::StatusCode::CONFLICT => {
                            tally.retries += 1;
                            day = d;
                        }
                        _ => {
                            tally.failed += 1;
                            eprintln!("booking refused: {status} {body}");
                            break;
                        }
                    }
                }
            }
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await?;
        total.booked += t.booked;
        total.retries += t.retries;
        total.failed += t.failed;
        total.latencies_ms.extend(t.latencies_ms);
    }
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = server.await;

    let over = places_over_capacity(&database).await?;
    let mismatched: i64 = database
        .query_one_raw(Statement::from_string(
            database.get_database_backend(),
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM institution_days d WHERE d.booked <> (\
               SELECT COUNT(*) FROM appointments a WHERE a.institution_id = d.institution_id \
               AND a.day = d.day AND a.status IN ('booked', 'attended', 'no_show'))",
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    total
        .latencies_ms
        .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| {
        let l = &total.latencies_ms;
        if l.is_empty() {
            0.0
        } else {
            round(l[((l.len() - 1) as f64 * p).round() as usize])
        }
    };
    println!(
        "{}",
        json!({
            "bench": "book",
            "database": db::backend_name(database.get_database_backend()),
            "items": total.booked,
            "seconds": round(seconds),
            "per_sec": (total.booked as f64 / seconds).round(),
            "groups": groups.len(),
            "group_size": group,
            "institutions": institutions,
            "clients": clients,
            "capacity_per_day": capacity,
            "full_day_retries": total.retries,
            "failed": total.failed,
            "over_capacity": over,
            "counter_mismatches": mismatched,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "peak_rss_mb": round(peak_rss_mb()),
        })
    );
    anyhow::ensure!(over == 0 && mismatched == 0, "capacity was exceeded");
    Ok(())
}

/// Places booked beyond their day's capacity, counted from the appointments themselves (not
/// the counter).
pub(super) async fn places_over_capacity(database: &DatabaseConnection) -> anyhow::Result<i64> {
    Ok(database
        .query_one_raw(Statement::from_string(
            database.get_database_backend(),
            "SELECT CAST(COALESCE(SUM(n - capacity), 0) AS BIGINT) AS over FROM (\
               SELECT COUNT(*) AS n, d.capacity AS capacity FROM appointments a \
               JOIN institution_days d ON d.institution_id = a.institution_id AND d.day = a.day \
               WHERE a.status IN ('booked', 'attended', 'no_show') \
               GROUP BY a.institution_id, a.day, d.capacity \
               HAVING COUNT(*) > d.capacity) t",
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "over"))
        .transpose()?
        .unwrap_or(0))
}
