//! `outreach-bench <scenario>`: timed runs of the real code paths on synthetic data, one JSON
//! line per measurement. Runs against `DATABASE_URL` (a PostgreSQL server gets a fresh
//! database of its own, dropped afterwards) or a fresh temporary SQLite file.

// The scenarios' modules are named `*_bench` so that they do not read as the service's own
// `campaign`, `report`, … modules they call.
#[path = "campaign.rs"]
mod campaign_bench;
#[path = "dashboard.rs"]
mod dashboard_bench;
#[path = "load.rs"]
mod load_bench;
#[path = "outbox.rs"]
mod outbox_bench;
#[path = "report.rs"]
mod report_bench;
#[path = "worklist.rs"]
mod worklist_bench;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outreach::auth::Actor;
use outreach::config::{DatabaseUrl, Settings};
use outreach::privacy::Privacy;
use outreach::registry::Progress;
use outreach::{db, flows};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend};
use serde_json::json;

#[derive(Parser)]
#[command(name = "outreach-bench", about = "Benchmarks of the outreach service")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Import N synthetic residents through `outreach import residents`' code path, against a
    /// plain batched insert of the same rows as the baseline.
    Import {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Villages to spread the residents over.
        #[arg(long, default_value_t = 240)]
        villages: u32,
    },
    /// Open a campaign over N synthetic residents: enrolment into the progress rows.
    Enrol {
        #[arg(long, default_value_t = 1_000_000)]
        residents: u64,
    },
    /// Book N synthetic residents in groups through the HTTP API with parallel clients, then
    /// count places booked beyond capacity (must be 0).
    Book {
        #[arg(long, default_value_t = 100_000)]
        residents: u64,
        #[arg(long, default_value_t = 50)]
        group: usize,
        #[arg(long, default_value_t = 20)]
        institutions: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Places per institution and day.
        #[arg(long, default_value_t = 250)]
        capacity: i32,
    },
    /// Plan a migrant wave over N synthetic residents (a share of them migrants) through
    /// `waves::create`, then plan it again (must add nothing).
    Plan {
        #[arg(long, default_value_t = 1_000_000)]
        residents: u64,
        /// Percent of the residents who are migrants (the wave's audience).
        #[arg(long, default_value_t = 40)]
        migrant_percent: u64,
    },
    /// Drain N due messages through the real dispatcher into a local stand-in for the Jasmin
    /// gateway, against a plain HTTP loop as the baseline; on PostgreSQL also with two
    /// dispatcher processes (duplicates at the gateway must be 0).
    Dispatch {
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        /// Messages leased per round.
        #[arg(long, default_value_t = 500)]
        batch: u32,
        /// Sends in flight per dispatcher (and in the baseline).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Database connections per dispatcher (the service's default is 10).
        #[arg(long, default_value_t = 10)]
        connections: u32,
    },
    /// Reports over a county a month into its campaign: the live cube and the closed days
    /// rebuilt, then the county by township, one village, the 30-day series and the XLSX
    /// download, each asked for `--runs` times.
    Report {
        #[arg(long, default_value_t = 1_000_000)]
        residents: u64,
        #[arg(long, default_value_t = 3_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 50_000)]
        appointments: u64,
        /// Timed repetitions of each report.
        #[arg(long, default_value_t = 30)]
        runs: usize,
    },
    /// A village cadre's worklist pages over the `report` scenario's county, with one village
    /// of exactly 3,000 residents: the page through the router with a session cookie, another
    /// list, a name search and the resident page, then the domain calls behind them, each
    /// `--runs` times after `--warmup` untimed runs.
    Worklist {
        #[arg(long, default_value_t = 1_000_000)]
        residents: u64,
        #[arg(long, default_value_t = 3_000_000)]
        messages: u64,
        /// Appointments of the appointed and examined residents (the default: all of them).
        #[arg(long, default_value_t = 1_000_000)]
        appointments: u64,
        /// Timed repetitions of each request.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Untimed repetitions before them.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
    },
    /// The county office's and a township officer's dashboard (`/app/`) over the `report`
    /// scenario's county, every closed day's figures kept: each page through the router with
    /// a session cookie, then the report calls behind it, each `--runs` times after
    /// `--warmup` untimed runs.
    Dashboard {
        #[arg(long, default_value_t = 1_000_000)]
        residents: u64,
        #[arg(long, default_value_t = 3_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 50_000)]
        appointments: u64,
        /// Timed repetitions of each request.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Untimed repetitions before them.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
    },
    /// Village cadres working at once against `outreach serve` processes (1 on SQLite, 3
    /// sharing PostgreSQL) over the `report` scenario's county: worklist page, resident page,
    /// contact attempt, booking and a resident's own link, each after a think time; p50 /
    /// p95 / p99 per kind, answers by status, the instances' CPU and memory. Needs the
    /// `outreach` binary beside this one (`cargo build --release --bins`).
    Load {
        #[arg(long, default_value_t = 1_000_000)]
        residents: u64,
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 50_000)]
        appointments: u64,
        /// Cadre sessions at once.
        #[arg(long, default_value_t = 500)]
        sessions: usize,
        /// How long they work.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// `serve` processes (default: 1 on SQLite, 3 on PostgreSQL).
        #[arg(long)]
        instances: Option<usize>,
        /// Mean pause between a session's requests, in ms (each pause is half to one and a
        /// half times it).
        #[arg(long, default_value_t = 2_000)]
        think_ms: u64,
    },
    /// One dispatcher process of the `dispatch` scenario (started by it).
    #[command(hide = true)]
    DispatchWorker {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        sink_url: String,
        /// The data key (base64); passed in the environment by the parent.
        #[arg(long, env = outbox_bench::KEY_ENV, hide_env_values = true)]
        privacy_key: String,
        #[arg(long, default_value_t = 500)]
        batch: u32,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        connections: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.scenario {
            Scenario::Import { rows, villages } => import(rows, villages).await,
            Scenario::Enrol { residents } => campaign_bench::enrol(residents).await,
            Scenario::Book {
                residents,
                group,
                institutions,
                clients,
                capacity,
            } => campaign_bench::book(residents, group, institutions, clients, capacity).await,
            Scenario::Plan {
                residents,
                migrant_percent,
            } => outbox_bench::plan(residents, migrant_percent).await,
            Scenario::Dispatch {
                messages,
                batch,
                concurrency,
                connections,
            } => {
                outbox_bench::dispatch(outbox_bench::DispatchOptions {
                    messages,
                    batch,
                    concurrency,
                    connections,
                })
                .await
            }
            Scenario::Report {
                residents,
                messages,
                appointments,
                runs,
            } => {
                report_bench::report(report_bench::ReportOptions {
                    county: report_bench::County {
                        residents,
                        messages,
                        appointments,
                    },
                    runs,
                })
                .await
            }
            Scenario::Worklist {
                residents,
                messages,
                appointments,
                runs,
                warmup,
            } => {
                worklist_bench::worklist(worklist_bench::WorklistOptions {
                    county: report_bench::County {
                        residents,
                        messages,
                        appointments,
                    },
                    runs,
                    warmup,
                })
                .await
            }
            Scenario::Dashboard {
                residents,
                messages,
                appointments,
                runs,
                warmup,
            } => {
                dashboard_bench::dashboard(dashboard_bench::DashboardOptions {
                    county: report_bench::County {
                        residents,
                        messages,
                        appointments,
                    },
                    runs,
                    warmup,
                })
                .await
            }
            Scenario::Load {
                residents,
                messages,
                appointments,
                sessions,
                seconds,
                instances,
                think_ms,
            } => {
                load_bench::load(load_bench::LoadOptions {
                    county: report_bench::County {
                        residents,
                        messages,
                        appointments,
                    },
                    sessions,
                    seconds,
                    instances,
                    think_ms,
                })
                .await
            }
            Scenario::DispatchWorker {
                database_url,
                sink_url,
                privacy_key,
                batch,
                concurrency,
                connections,
            } => {
                let options = outbox_bench::DispatchOptions {
                    messages: 0,
                    batch,
                    concurrency,
                    connections,
                };
                outbox_bench::worker(&database_url, &privacy_key, &sink_url, options).await
            }
        }
    })
}

/// A database for this run: a fresh PostgreSQL database when `DATABASE_URL` names a server,
/// else a new SQLite file in `dir`. Returns the URL and, for PostgreSQL, a cleanup handle.
async fn bench_database(dir: &Path) -> anyhow::Result<(String, Option<(String, String)>)> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => {
            let name = format!("outreach_bench_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(&url)
                .await
                .context("connect DATABASE_URL")?;
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await?;
            admin.close().await?;
            let mut bench = url::Url::parse(&url)?;
            bench.set_path(&name);
            Ok((bench.to_string(), Some((url, name))))
        }
        Ok(url) if !url.is_empty() => Ok((url, None)),
        _ => Ok((
            format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
            None,
        )),
    }
}

async fn drop_database(cleanup: Option<(String, String)>) -> anyhow::Result<()> {
    if let Some((admin_url, name)) = cleanup {
        let admin = Database::connect(&admin_url).await?;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
    }
    Ok(())
}

fn peak_rss_mb() -> f64 {
    memory_mb("self", "VmHWM:")
}

/// A line of `/proc/<process>/status` (`VmRSS:`, `VmHWM:`) in MB; 0 when it cannot be read.
fn memory_mb(process: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A small deterministic generator (xorshift), so every run imports the same population.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SURNAMES: &[&str] = &[
    "王",
    "李",
    "张",
    "刘",
    "陈",
    "杨",
    "赵",
    "黄",
    "马",
    "艾",
    "买",
    "吐",
    "努尔",
    "阿不都",
];
const GIVEN: &[&str] = &[
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "古丽",
    "江",
    "热合曼",
    "别克",
    "阿依",
];

fn village_code(index: u32) -> String {
    format!("654025{:03}{:03}", 100 + index / 20, 201 + index % 20)
}

fn areas_csv(villages: u32) -> String {
    let mut csv = String::from("区划代码,名称\n654025000000,新源县\n");
    for township in 0..villages.div_ceil(20) {
        csv.push_str(&format!(
            "654025{:03}000,第{}镇\n",
            100 + township,
            township + 1
        ));
    }
    for v in 0..villages {
        csv.push_str(&format!("{},第{}村\n", village_code(v), v + 1));
    }
    csv
}

/// Writes `rows` valid residents: unique ID numbers with correct check digits.
fn write_residents(path: &Path, rows: u64, villages: u32) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "姓名,身份证号,户籍地区划代码,联系电话,亲属姓名,亲属电话,流动类型,特殊情况,语言"
    )?;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let migrant = [
        "本地",
        "本地",
        "本地",
        "本地",
        "本地",
        "本地",
        "疆内有居住证",
        "疆内无居住证",
        "疆外",
        "外出上学",
    ];
    let epoch = chrono::NaiveDate::from_ymd_opt(1930, 1, 1).expect("valid date");
    for i in 0..rows {
        let birth = epoch + chrono::Days::new(rng.below(34_000));
        // The 3-digit sequence and the region digits together keep every number unique.
        let first17 = format!(
            "65{:04}{}{:03}",
            (i / 1000) % 10_000,
            birth.format("%Y%m%d"),
            i % 1000
        );
        let check = check_char(first17.as_bytes()) as char;
        let name = format!(
            "{}{}",
            SURNAMES[rng.below(SURNAMES.len() as u64) as usize],
            GIVEN[rng.below(GIVEN.len() as u64) as usize]
        );
        let village = village_code(rng.below(u64::from(villages)) as u32);
        let phone = if rng.below(10) < 7 {
            format!("13{:09}", rng.below(1_000_000_000))
        } else {
            String::new()
        };
        let (relative, relative_phone) = if rng.below(10) < 3 {
            (
                "亲属".to_owned(),
                format!("15{:09}", rng.below(1_000_000_000)),
            )
        } else {
            (String::new(), String::new())
        };
        let special = if rng.below(100) < 2 {
            "行动不便"
        } else {
            ""
        };
        let language = ["zh", "zh", "ug", "kk"][rng.below(4) as usize];
        writeln!(
            out,
            "{name},{first17}{check},{village},{phone},{relative},{relative_phone},{},{special},{language}",
            migrant[rng.below(migrant.len() as u64) as usize]
        )?;
    }
    out.flush()?;
    Ok(())
}

fn check_char(first17: &[u8]) -> u8 {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    b"10X98765432"[(sum % 11) as usize]
}

async fn import(rows: u64, villages: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, cleanup) = bench_database(dir.path()).await?;
    let result = run_import(dir.path(), &url, rows, villages).await;
    drop_database(cleanup).await?;
    result
}

async fn run_import(dir: &Path, url: &str, rows: u64, villages: u32) -> anyhow::Result<()> {
    let settings = Settings {
        database_url: DatabaseUrl::new(url),
        ..Settings::default()
    };
    let database = db::connect_and_migrate(&settings).await?;
    let privacy = Arc::new(Privacy::from_master_key(&[42; 32]));
    flows::areas::import_areas(&database, &Actor::cli(), areas_csv(villages).as_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("areas: {e}"))?;
    let file = dir.join("residents.csv");
    write_residents(&file, rows, villages)?;

    let started = Instant::now();
    let result = flows::registry::import_residents(
        &database,
        privacy,
        &Actor::cli(),
        &file,
        Some(dir.join("residents.csv.rejected.csv")),
        Progress::Silent,
    )
    .await
    .map_err(|e| anyhow::anyhow!("import: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        result.summary.imported == rows && result.summary.rejected == 0,
        "the synthetic file should import whole: {:?}",
        result.summary
    );
    let peak = peak_rss_mb();

    let baseline_seconds = baseline(&database, &file).await?;
    let per_sec = rows as f64 / seconds;
    let baseline_per_sec = rows as f64 / baseline_seconds;
    println!(
        "{}",
        json!({
            "bench": "import",
            "database": db::backend_name(database.get_database_backend()),
            "items": rows,
            "seconds": round(seconds),
            "per_sec": per_sec.round(),
            "peak_rss_mb": round(peak),
            "baseline_seconds": round(baseline_seconds),
            "baseline_per_sec": baseline_per_sec.round(),
            "ratio": round(baseline_per_sec / per_sec),
        })
    );
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The same rows, read with a plain CSV reader and inserted unvalidated and unencrypted into
/// a table without secondary indexes, in batches of the same size, in one transaction.
async fn baseline(database: &DatabaseConnection, file: &Path) -> anyhow::Result<f64> {
    use sea_orm::TransactionTrait;
    use sea_orm::sea_query::{Alias, Query};
    let backend = database.get_database_backend();
    let id_column = if backend == DbBackend::Postgres {
        "id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    } else {
        "id integer PRIMARY KEY AUTOINCREMENT"
    };
    database
        .execute_unprepared(&format!(
            "CREATE TABLE bench_baseline ({id_column}, name text, id_number text, village_code text, \
             phone text, relative_name text, relative_phone text, migrant_type text, special text, language text)"
        ))
        .await?;
    let started = Instant::now();
    let txn = database.begin().await?;
    let mut reader = csv::Reader::from_path(file)?;
    let columns = [
        "name",
        "id_number",
        "village_code",
        "phone",
        "relative_name",
        "relative_phone",
        "migrant_type",
        "special",
        "language",
    ];
    let mut batch = Vec::with_capacity(1000);
    let mut records = reader.records();
    loop {
        let record = records.next().transpose()?;
        if let Some(record) = &record {
            batch.push(record.iter().map(str::to_owned).collect::<Vec<_>>());
        }
        if batch.len() == 1000 || (record.is_none() && !batch.is_empty()) {
            let mut insert = Query::insert();
            insert
                .into_table(Alias::new("bench_baseline"))
                .columns(columns.map(Alias::new));
            for row in batch.drain(..) {
                insert.values_panic(row.into_iter().map(Into::into));
            }
            txn.execute(&insert).await?;
        }
        if record.is_none() {
            break;
        }
    }
    sea_orm::TransactionSession::commit(txn).await?;
    Ok(started.elapsed().as_secs_f64())
}
