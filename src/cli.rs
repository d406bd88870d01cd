//! The command line: `serve`, `migrate`, `backup`, `restore`, `import areas|residents|exams`,
//! `user add`, `demo`. Each command loads the settings the same way and calls the same
//! services the HTTP API uses.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::auth::Actor;
use crate::config::{Overrides, Settings};
use crate::error::AppError;
use crate::import::{ImportSummary, rejected_path, write_rejected_csv};
use crate::privacy::Privacy;
use crate::startup::{Application, shutdown_on_signals};
use crate::{db, flows, registry, telemetry, users};

/// Largest area or exam list accepted (a whole province is a few MB).
const MAX_LIST_FILE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(name = "outreach", version, about = "全民健康体检 outreach service")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "OUTREACH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL (sqlite://… or postgres://…); wins over DATABASE_URL and the file.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (migrates the database first).
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080.
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Copy the SQLite database to FILE while the service runs (a consistent snapshot).
    /// The data key is not in the backup: keep it apart. On PostgreSQL this prints the
    /// pg_dump command to use instead.
    Backup {
        /// Where to write the backup.
        file: PathBuf,
        /// Replace FILE when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Put an SQLite backup in place as the configured database (stop the service first),
    /// migrate it and check the refusal register's chains. Exits 1 when a chain is broken.
    Restore {
        /// The backup written by `outreach backup`.
        file: PathBuf,
        /// Replace the configured database when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Run dispatch workers only (no HTTP), e.g. on another machine or beside `serve` with
    /// `messaging.outbox.dispatch = false`. Stops on SIGTERM after recording the sends in
    /// flight.
    Dispatch {
        /// Send what is due now, print the totals as JSON and exit.
        #[arg(long)]
        until_idle: bool,
    },
    /// Import data from a file.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// The refusal register.
    #[command(subcommand)]
    Refusals(RefusalsCommand),
    /// Reports: rebuild the figures, print or save a progress report.
    #[command(subcommand)]
    Report(ReportCommand),
    /// A demo county (新源县) in a directory of its own: areas, synthetic residents, a
    /// campaign some weeks into its exams, one login per role; then serves it. The demo
    /// always keeps its own SQLite database and key in the directory (DATABASE_URL and
    /// PostgreSQL are not used). Running it again reuses the directory.
    Demo {
        /// The demo's directory (created; reused when it holds a demo).
        #[arg(long, default_value = "outreach-demo", value_name = "DIR")]
        dir: PathBuf,
        /// The same seed gives the same county, residents and history.
        #[arg(long, default_value_t = 16)]
        seed: u64,
        /// Delete the demo directory and build it again.
        #[arg(long)]
        reset: bool,
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Residents in the registry (500–200,000).
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(500..=200_000))]
        residents: u32,
        /// Build the demo and print the logins, without serving.
        #[arg(long)]
        no_serve: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Rebuild a campaign's report figures now and compute closed days not kept yet.
    Refresh {
        /// The campaign's id. A year (e.g. 2026) is accepted too when no campaign has that id
        /// and exactly one campaign is of that year.
        #[arg(long, value_name = "ID")]
        campaign: i32,
        /// Closed days to compute at most (default: `reports.backfill_days_per_run`).
        #[arg(long)]
        backfill: Option<u32>,
    },
    /// The progress report of a campaign (whole tree, or an area), printed as a table or as
    /// JSON, or saved as XLSX / CSV.
    Progress {
        /// The campaign's id. A year (e.g. 2026) is accepted too when no campaign has that id
        /// and exactly one campaign is of that year.
        #[arg(long, value_name = "ID")]
        campaign: i32,
        /// Area code (county, township or village).
        #[arg(long)]
        area: Option<String>,
        /// none, township, village, cohort, migrant_type, special or route.
        #[arg(long)]
        by: Option<String>,
        /// Figures at the end of this day (YYYY-MM-DD).
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// With --to: what happened from this day on.
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Write to this file; `.xlsx` or `.csv` by its extension.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RefusalsCommand {
    /// Check every resident's chain of refusal records (and the audit log beside it); exits 1
    /// when any record was altered, removed or added behind the service's back. The outcome
    /// is recorded in the audit log, where the office's review page reads it.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// The area tree from a CSV of 12-digit codes (区划代码/code) and names (名称/name).
    Areas {
        file: PathBuf,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The household population from CSV (UTF-8 or GB18030) or XLSX; see the README for columns.
    Residents {
        file: PathBuf,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Key-group tags (身份证号/id_number, 标签/tag, optional 操作/action add|remove) from CSV
    /// or XLSX; several tags in a cell are separated by 、 , or ;.
    Tags {
        file: PathBuf,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Exam records from the checkup system's CSV (身份证号/id_number, 体检日期/exam_date,
    /// 体检机构/institution code) into a campaign.
    Exams {
        file: PathBuf,
        /// The campaign's id. A year (e.g. 2026) is accepted too when no campaign has that id
        /// and exactly one campaign is of that year.
        #[arg(long, value_name = "ID")]
        campaign: i32,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user whose scope is AREA and everything under it.
    Add {
        #[arg(long)]
        username: String,
        /// office, township, cadre, institution or auditor
        #[arg(long)]
        role: String,
        /// 12-digit area code of the scope.
        #[arg(long, value_name = "CODE")]
        area: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Code of the institution an `institution` user works for.
        #[arg(long, value_name = "CODE")]
        institution: Option<String>,
        /// Read the password from the first line of standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let bind = match &cli.command {
        Command::Serve { bind } => *bind,
        _ => None,
    };
    let overrides = Overrides {
        bind,
        database_url: cli.database_url.clone(),
    };
    let mut settings =
        Settings::load(cli.config.as_deref(), &overrides).context("configuration")?;
    if matches!(cli.command, Command::Demo { .. })
        && settings.log.filter == crate::config::LogSettings::default().filter
    {
        // The demo sends thousands of messages through the `log` channel while it builds.
        settings.log.filter = "warn".to_owned();
    }
    telemetry::init(&settings.log);
    match cli.command {
        Command::Serve { .. } => serve(settings).await,
        Command::Demo {
            dir,
            seed,
            reset,
            bind,
            residents,
            no_serve,
        } => {
            let options = crate::demo::Options {
                dir,
                seed,
                reset,
                bind,
                residents: residents as usize,
                serve: !no_serve,
            };
            crate::demo::run(settings, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dispatch { until_idle } => dispatch(settings, until_idle).await,
        Command::Migrate => {
            db::connect_and_migrate(&settings).await?;
            println!("migrations applied to {}", settings.database_url);
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { file, force } => {
            backup(settings, cli.config.as_deref(), &file, force).await
        }
        Command::Restore { file, force } => {
            restore(settings, cli.config.as_deref(), &file, force).await
        }
        Command::Import(ImportCommand::Areas { file, json }) => {
            import_areas(settings, &file, json).await
        }
        Command::Import(ImportCommand::Residents { file, json }) => {
            import_residents(settings, &file, json).await
        }
        Command::Import(ImportCommand::Tags { file, json }) => {
            import_tags(settings, &file, json).await
        }
        Command::Import(ImportCommand::Exams {
            file,
            campaign,
            json,
        }) => import_exams(settings, &file, campaign, json).await,
        Command::Refusals(RefusalsCommand::Verify { json }) => {
            verify_refusals(settings, json).await
        }
        Command::Report(ReportCommand::Refresh { campaign, backfill }) => {
            let database = db::connect_and_migrate(&settings).await?;
            let campaign = match resolve_campaign(&database, campaign).await? {
                Ok(id) => id,
                Err(message) => {
                    eprintln!("错误 error: {message}");
                    return Ok(ExitCode::from(2));
                }
            };
            let days = backfill.unwrap_or(settings.reports.backfill_days_per_run);
            let refreshed = crate::flows::reports::refresh_now(&database, campaign, days)
                .await
                .map_err(app_error)?;
            println!("{}", serde_json::to_string(&refreshed)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(ReportCommand::Progress {
            campaign,
            area,
            by,
            to,
            from,
            out,
            json,
        }) => {
            let query = crate::report::SliceQuery {
                area,
                by,
                to,
                from,
                ..Default::default()
            };
            report_progress(settings, campaign, query, out, json).await
        }
        Command::User(UserCommand::Add {
            username,
            role,
            area,
            display_name,
            institution,
            password_stdin,
        }) => {
            let password = if password_stdin {
                Some(read_password_line()?)
            } else {
                None
            };
            add_user(
                settings,
                username,
                role,
                area,
                display_name,
                institution,
                password,
            )
            .await
        }
    }
}

async fn dispatch(settings: Settings, until_idle: bool) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone()).context("installing signal handlers")?;
    let database = db::connect_and_migrate(&settings).await?;
    let dispatcher = crate::startup::dispatcher_for(&settings, database.clone())?;
    // The dispatch workers' metrics are scraped from `metrics.bind` (there is no public
    // listener here).
    if settings.metrics.bind.is_some() && !until_idle {
        let metrics_listener = crate::startup::metrics_listener(&settings).await?;
        let metrics = crate::http::metrics::run(
            metrics_listener,
            database,
            settings.metrics.token.clone(),
            settings.http.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = metrics.await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    if until_idle {
        let totals = dispatcher.drain().await.map_err(app_error)?;
        println!("{}", serde_json::to_string(&totals)?);
    } else {
        tracing::info!("dispatching");
        dispatcher.run(shutdown).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `outreach backup`: an online copy of an SQLite database, with where its key lives.
async fn backup(
    settings: Settings,
    config: Option<&Path>,
    file: &Path,
    force: bool,
) -> anyhow::Result<ExitCode> {
    if settings.database_url.is_sqlite() && settings.database_url.sqlite_path().is_none() {
        eprintln!("错误 error: 内存数据库无法备份 / an in-memory database cannot be backed up");
        return Ok(ExitCode::from(2));
    }
    let Some(source) = settings.database_url.sqlite_path() else {
        eprintln!(
            "错误 error: outreach backup 只复制 SQLite 数据库；PostgreSQL 数据库请用 pg_dump 备份"
        );
        eprintln!(
            "  outreach backup copies SQLite databases only; back up PostgreSQL with pg_dump:"
        );
        eprintln!(
            "  pg_dump --format=custom --file={} '{}'",
            file.display(),
            without_password(&settings.database_url)
        );
        eprintln!("  (password from PGPASSWORD or ~/.pgpass; see README, Backups)");
        print_key_notice(&settings, config, true);
        return Ok(ExitCode::from(2));
    };
    if !source.is_file() {
        eprintln!(
            "错误 error: 数据库文件 {} 不存在 / the database file does not exist",
            source.display()
        );
        return Ok(ExitCode::from(2));
    }
    if same_file(&source, file) {
        eprintln!(
            "错误 error: 备份不能写到数据库文件本身 / the backup cannot replace the database itself"
        );
        return Ok(ExitCode::from(2));
    }
    if file.exists() && !force {
        eprintln!(
            "错误 error: {} 已存在，用 --force 覆盖 / already exists; --force replaces it",
            file.display()
        );
        return Ok(ExitCode::from(2));
    }
    let database = db::connect(&settings).await?;
    let bytes = db::backup_sqlite(&database, file, force).await;
    database.close().await.ok();
    let bytes = bytes?;
    println!(
        "备份已写入 backup written: {} ({bytes} 字节 bytes), from {}",
        file.display(),
        source.display()
    );
    print_key_notice(&settings, config, false);
    Ok(ExitCode::SUCCESS)
}

/// What every backup needs said: the data key is not in it, where the key is, and what a
/// backup without it is worth; and the signature images when they live in a directory.
fn print_key_notice(settings: &Settings, config: Option<&Path>, to_stderr: bool) {
    use crate::privacy::KeyPlace;
    let place = match crate::privacy::key_place(settings) {
        KeyPlace::Setting if std::env::var_os("OUTREACH_PRIVACY__KEY").is_some() => {
            "环境变量 environment variable OUTREACH_PRIVACY__KEY".to_owned()
        }
        KeyPlace::Setting => match config {
            Some(config) => format!("privacy.key in {}", config.display()),
            None => "privacy.key".to_owned(),
        },
        KeyPlace::File(path) if path.exists() => format!("文件 file {}", path.display()),
        KeyPlace::File(path) => format!(
            "文件 file {}（尚不存在 does not exist yet）",
            path.display()
        ),
        KeyPlace::Unset => "未设置 not set (privacy.key / privacy.key_file)".to_owned(),
    };
    let mut lines = vec![
        "注意：备份中不含数据密钥 / NOTE: the data key is NOT inside the backup.".to_owned(),
        format!("  密钥位置 the key is in: {place}"),
        "  没有这把密钥，备份中的身份证号和手机号无法读取，服务也无法使用该备份；请把密钥另行妥善保存".to_owned(),
        "  A backup without its key cannot be read (ID and phone numbers are encrypted with it): keep a copy of the key, stored apart from the backup.".to_owned(),
    ];
    if let Some(dir) = &settings.signatures.dir {
        lines.push(format!(
            "  签名图片在目录 {} 中，不在备份里，请一并复制 / the signature images are in {}, not in the backup: copy that directory too",
            dir.display(),
            dir.display()
        ));
    }
    for line in lines {
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// A PostgreSQL URL for a command line to show: the password left out (`pg_dump` and
/// `pg_restore` read it from `PGPASSWORD` or `~/.pgpass`).
fn without_password(url: &crate::config::DatabaseUrl) -> String {
    match url::Url::parse(url.expose()) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `outreach restore`: an SQLite backup put in place, migrated and its refusal chains checked.
async fn restore(
    settings: Settings,
    config: Option<&Path>,
    file: &Path,
    force: bool,
) -> anyhow::Result<ExitCode> {
    if settings.database_url.is_sqlite() && settings.database_url.sqlite_path().is_none() {
        eprintln!("错误 error: 无法恢复到内存数据库 / cannot restore into an in-memory database");
        return Ok(ExitCode::from(2));
    }
    let Some(target) = settings.database_url.sqlite_path() else {
        eprintln!("错误 error: outreach restore 只恢复 SQLite 数据库；PostgreSQL 请用 pg_restore");
        eprintln!(
            "  outreach restore restores SQLite databases only; for PostgreSQL use pg_restore:"
        );
        eprintln!(
            "  pg_restore --clean --if-exists --no-owner --dbname='{}' {}",
            without_password(&settings.database_url),
            file.display()
        );
        eprintln!("  then: outreach migrate && outreach refusals verify (see README, Backups)");
        return Ok(ExitCode::from(2));
    };
    let refuse = |message: String| {
        eprintln!("错误 error: {message}");
        Ok(ExitCode::from(2))
    };
    if same_file(&target, file) {
        return refuse(format!(
            "{} 就是当前数据库 / is the configured database itself",
            file.display()
        ));
    }
    if target.exists() && !force {
        return refuse(format!(
            "数据库 {} 已存在；先停止服务，再加 --force 用备份替换它 / the database exists; stop the service, then give --force to replace it",
            target.display()
        ));
    }
    if let crate::privacy::KeyPlace::File(path) = crate::privacy::key_place(&settings)
        && !path.exists()
    {
        return refuse(format!(
            "数据密钥文件 {} 不存在：请先放回与备份一同保存的密钥 / the data key file does not exist: put back the key kept with the backup first",
            path.display()
        ));
    }
    let privacy = Privacy::load(&settings)?;
    let found = db::open_sqlite_read_only(file).await;
    let backup = match found {
        Ok(backup) => backup,
        Err(e) => return refuse(format!("{e:#}")),
    };
    let checked = db::inspect_sqlite_backup(&backup, file).await;
    let key_opens = registry::key_opens(&backup, &privacy).await;
    backup.close().await.ok();
    let facts = match checked {
        Ok(facts) => facts,
        Err(e) => return refuse(format!("{e:#}")),
    };
    if !facts.unknown_migrations.is_empty() {
        return refuse(format!(
            "{} 由更新版本的 outreach 写成，请用该版本恢复 / was written by a newer outreach (migrations {}); restore it with that version",
            file.display(),
            facts.unknown_migrations.join(", ")
        ));
    }
    if key_opens.map_err(app_error)? == Some(false) {
        print_key_notice(&settings, config, true);
        return refuse(format!(
            "配置的数据密钥打不开 {} 中的身份证号：这不是该备份的密钥 / the configured data key does not open the ID numbers in {}: it is not this backup's key",
            file.display(),
            file.display()
        ));
    }
    db::restore_sqlite(file, &target)?;
    println!("已恢复 restored {} → {}", file.display(), target.display());
    let database = db::connect_and_migrate(&settings).await?;
    println!("migrations applied to {}", settings.database_url);
    let report = crate::flows::refusals::verify_and_record(&database, &Actor::cli())
        .await
        .map_err(app_error)?;
    database.close().await.ok();
    println!(
        "拒检登记链 refusal chains: checked {} records of {} residents: {}",
        report.records,
        report.residents,
        if report.ok { "intact" } else { "BROKEN" }
    );
    if !report.ok {
        println!("  details: outreach refusals verify");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify_refusals(settings: Settings, json: bool) -> anyhow::Result<ExitCode> {
    let database = db::connect_and_migrate(&settings).await?;
    let report = crate::flows::refusals::verify_and_record(&database, &crate::auth::Actor::cli())
        .await
        .map_err(app_error)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "checked {} records of {} residents: {}",
            report.records,
            report.residents,
            if report.ok { "intact" } else { "BROKEN" }
        );
        for b in &report.breaks {
            let record = b.record_id.map(|id| id.to_string()).unwrap_or_default();
            println!(
                "  resident {} record {record}: {} — {}",
                b.resident_id, b.problem, b.message
            );
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn report_progress(
    settings: Settings,
    campaign: i32,
    query: crate::report::SliceQuery,
    out: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use crate::report::export::{about_progress, progress_tables, workbook};
    let database = db::connect_and_migrate(&settings).await?;
    let campaign = match resolve_campaign(&database, campaign).await? {
        Ok(id) => id,
        Err(message) => {
            eprintln!("错误 error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let progress = crate::report::progress(&database, &crate::auth::Actor::cli(), campaign, &query)
        .await
        .map_err(app_error)?;
    if let Some(path) = out {
        let tables = progress_tables(&progress);
        let bytes = match path.extension().and_then(|e| e.to_str()) {
            Some("xlsx") => workbook(&about_progress(&progress), &tables).map_err(app_error)?,
            Some("csv") => tables[0].csv().map_err(app_error)?,
            _ => anyhow::bail!("--out must end in .xlsx or .csv"),
        };
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("written {}", path.display());
    } else if json {
        println!("{}", serde_json::to_string(&progress)?);
    } else {
        println!(
            "{} {} ({})",
            progress.campaign_name,
            progress.area_name,
            crate::report::export::as_of_text(&progress.as_of)
        );
        // A rate without a target is "-", so that no cell is empty.
        let pct = |r: Option<f64>| {
            r.map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "-".to_owned())
        };
        let mut table = vec![
            [
                "区划代码",
                "名称",
                "应检人数",
                "已联系",
                "联系率",
                "已体检",
                "体检率",
                "拒检",
            ]
            .map(str::to_owned),
        ];
        for row in progress.rows.iter().chain([&crate::report::Row {
            key: String::new(),
            name: "合计".to_owned(),
            figures: progress.total.clone(),
        }]) {
            let f = &row.figures;
            table.push([
                row.key.clone(),
                row.name.clone(),
                f.target.to_string(),
                f.reached.to_string(),
                pct(f.reach_rate),
                f.examined.to_string(),
                pct(f.exam_rate),
                f.refused.to_string(),
            ]);
        }
        for line in aligned(&table, 2) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone()).context("installing signal handlers")?;
    tracing::info!(database = %settings.database_url, "opening database");
    let database = db::connect_and_migrate(&settings).await?;
    let admin_password = flows::accounts::ensure_admin(&database)
        .await
        .map_err(app_error)?;
    let app = Application::build_with_db(settings, database).await?;
    let address = app.local_addr();
    tracing::info!(%address, "listening");
    println!("outreach 正在运行 / listening on http://{address}");
    if let Some(password) = admin_password {
        // Printed, never logged: this is the only time the password exists in clear text.
        println!();
        println!("首次启动，已创建管理员账户 / first start: an administrator account was created");
        println!("  用户名 username: {}", users::ADMIN_USERNAME);
        println!("  密码 password:   {password}");
        println!(
            "  此密码只显示这一次，请登录后立即修改 / shown only this once; change it after logging in:"
        );
        println!(
            "  curl -s -X POST http://{address}/api/v1/auth/login -H 'content-type: application/json' \\\n       -d '{{\"username\":\"{}\",\"password\":\"{password}\"}}'",
            users::ADMIN_USERNAME
        );
        println!();
    }
    app.run_until_stopped(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn import_areas(settings: Settings, file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = match read_limited(file, MAX_LIST_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(message) => {
            eprintln!("错误 error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let database = db::connect_and_migrate(&settings).await?;
    let result = match flows::areas::import_areas(&database, &Actor::cli(), &bytes).await {
        Ok(result) => result,
        Err(AppError::Validation { message, .. }) => {
            eprintln!("错误 error: {}: {message}", file.display());
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(app_error(e)),
    };
    report_rejected(
        file,
        &result.unknown_columns,
        &result.headers,
        &result.rejected,
    )?;
    print_summary(&result.summary, json)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the unknown columns and each rejected row, and writes the rows next to the input.
fn report_rejected(
    file: &Path,
    unknown_columns: &[String],
    headers: &[String],
    rejected: &[crate::import::RejectedRow],
) -> anyhow::Result<()> {
    for column in unknown_columns {
        eprintln!("警告 warning: 未识别的列已忽略 unknown column ignored: {column}");
    }
    for row in rejected {
        eprintln!(
            "第 {} 行 line {}: {} [{}]",
            row.line, row.line, row.reason, row.code
        );
    }
    if !rejected.is_empty() {
        let path =
            write_rejected_csv(file, headers, rejected).context("writing the rejected rows")?;
        eprintln!(
            "被拒绝的行已写入 rejected rows written to {}",
            path.display()
        );
    }
    Ok(())
}

async fn import_exams(
    settings: Settings,
    file: &Path,
    campaign: i32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = match read_limited(file, MAX_LIST_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(message) => {
            eprintln!("错误 error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let database = db::connect_and_migrate(&settings).await?;
    let privacy = Privacy::load(&settings)?;
    let campaign = match resolve_campaign(&database, campaign).await? {
        Ok(id) => id,
        Err(message) => {
            eprintln!("错误 error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let result =
        match crate::flows::exams::import(&database, &privacy, &Actor::cli(), campaign, &bytes)
            .await
        {
            Ok(result) => result,
            Err(
                e
                @ (AppError::Validation { .. } | AppError::Refused { .. } | AppError::Conflict(_)),
            ) => return Ok(nothing_imported(file, e)),
            Err(e) => return Err(app_error(e)),
        };
    report_rejected(
        file,
        &result.unknown_columns,
        &result.headers,
        &result.rejected_rows,
    )?;
    let s = &result.summary;
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!(
            "imported {} · duplicates {} · rejected {}（已导入 {}，重复体检 {}，被拒绝 {}）",
            s.imported, s.duplicates, s.rejected, s.imported, s.duplicates, s.rejected
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn import_residents(settings: Settings, file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(problem) = unusable_file(file, settings.import.max_file_bytes) {
        eprintln!("错误 error: {problem}");
        return Ok(ExitCode::from(2));
    }
    let database = db::connect_and_migrate(&settings).await?;
    let privacy = std::sync::Arc::new(Privacy::load(&settings)?);
    let result = flows::registry::import_residents(
        &database,
        privacy,
        &Actor::cli(),
        file,
        Some(rejected_path(file)),
        registry::Progress::Auto,
    )
    .await;
    let result = match result {
        Ok(result) => result,
        Err(AppError::Validation { message, .. }) => return Ok(nothing_imported(file, message)),
        Err(e) => return Err(app_error(e)),
    };
    for column in &result.unknown_columns {
        eprintln!("警告 warning: 未识别的列已忽略 unknown column ignored: {column}");
    }
    if let Some(path) = &result.rejected_file {
        eprintln!(
            "{} 行被拒绝，原因见 {} rows rejected, reasons in {}",
            result.summary.rejected,
            path.display(),
            path.display()
        );
    }
    print_summary(&result.summary, json)?;
    Ok(ExitCode::SUCCESS)
}

async fn import_tags(settings: Settings, file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(problem) = unusable_file(file, settings.import.max_file_bytes) {
        eprintln!("错误 error: {problem}");
        return Ok(ExitCode::from(2));
    }
    let database = db::connect_and_migrate(&settings).await?;
    let privacy = std::sync::Arc::new(Privacy::load(&settings)?);
    let result = match flows::registry::import_tags(&database, privacy, &Actor::cli(), file).await {
        Ok(result) => result,
        Err(AppError::Validation { message, .. }) => return Ok(nothing_imported(file, message)),
        Err(e) => return Err(app_error(e)),
    };
    report_rejected(
        file,
        &result.unknown_columns,
        &result.headers,
        &result.rejected_rows,
    )?;
    let s = &result.summary;
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!(
            "added {} · removed {} · unchanged {} · rejected {}（添加 {}，删除 {}，未变 {}，被拒绝 {}）",
            s.added,
            s.removed,
            s.unchanged,
            s.rejected,
            s.added,
            s.removed,
            s.unchanged,
            s.rejected
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a file given to an import cannot be read at all: not a file, larger than
/// `import.max_file_bytes`, or unreadable.
/// An import refused as a whole, said on stderr: exit code 2.
fn nothing_imported(file: &Path, why: impl std::fmt::Display) -> ExitCode {
    eprintln!(
        "错误 error: {}: {why}（未写入任何数据 nothing was imported）",
        file.display()
    );
    ExitCode::from(2)
}

fn unusable_file(file: &Path, limit: u64) -> Option<String> {
    match std::fs::metadata(file) {
        Ok(meta) if !meta.is_file() => Some(format!("{} 不是文件", file.display())),
        Ok(meta) if meta.len() > limit => Some(format!(
            "文件 {} 过大（{} 字节，上限 {limit} 字节，见 import.max_file_bytes）",
            file.display(),
            meta.len()
        )),
        Ok(_) => None,
        Err(e) => Some(format!("无法读取文件 {}: {e}", file.display())),
    }
}

fn print_summary(summary: &ImportSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        println!(
            "imported {} · updated {} · unchanged {} · rejected {}",
            summary.imported, summary.updated, summary.unchanged, summary.rejected
        );
    }
    Ok(())
}

async fn add_user(
    settings: Settings,
    username: String,
    role: String,
    area: String,
    display_name: Option<String>,
    institution: Option<String>,
    password: Option<String>,
) -> anyhow::Result<ExitCode> {
    let role = match users::parse_role(&role) {
        Ok(role) => role,
        Err(e) => {
            eprintln!("错误 error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let database = db::connect_and_migrate(&settings).await?;
    let new = users::NewUser {
        username,
        display_name,
        role,
        area_code: area,
        password,
        institution,
    };
    match flows::accounts::create(&database, &Actor::cli(), new).await {
        Ok(created) => {
            println!(
                "created user {} (id {}, role {}, area {})",
                created.user.username,
                created.user.id,
                crate::auth::role_name(created.user.role),
                created.user.area_code.as_deref().unwrap_or("-")
            );
            if let Some(password) = created.generated_password {
                println!("password (shown only this once): {password}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(AppError::Unexpected(e)) => Err(e),
        Err(e) => {
            eprintln!("错误 error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

fn read_password_line() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("无法读取文件 {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} 不是文件", path.display()));
    }
    if meta.len() > limit {
        return Err(format!(
            "文件 {} 过大（{} 字节，上限 {limit} 字节）",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("无法读取文件 {}: {e}", path.display()))
}

/// The campaign `--campaign` names: an id; or, when no campaign has that id, a year
/// (2000–9999) that exactly one campaign is of. The error is the operator's message.
async fn resolve_campaign(
    db: &impl sea_orm::ConnectionTrait,
    given: i32,
) -> anyhow::Result<Result<i32, String>> {
    let campaigns = crate::campaign::list(db).await.map_err(app_error)?;
    if campaigns.iter().any(|c| c.id() == given) {
        return Ok(Ok(given));
    }
    let known = || {
        campaigns
            .iter()
            .map(|c| format!("{}（{} 年）", c.id(), c.model.year))
            .collect::<Vec<_>>()
            .join("、")
    };
    if !(2000..=9999).contains(&given) {
        return Ok(Err(format!(
            "没有编号为 {given} 的体检工作；现有：{}",
            known()
        )));
    }
    let of_year: Vec<i32> = campaigns
        .iter()
        .filter(|c| c.model.year == given)
        .map(|c| c.id())
        .collect();
    Ok(match of_year[..] {
        [id] => Ok(id),
        [] => Err(format!(
            "没有编号为 {given} 的体检工作，也没有 {given} 年的体检工作；现有：{}",
            known()
        )),
        _ => Err(format!(
            "{given} 年有多个体检工作，请用编号指定 --campaign：{}",
            known()
        )),
    })
}

/// Rows of cells as lines whose columns line up on a terminal: widths are display widths
/// (a Chinese character takes two columns); the first two columns are left-aligned (code,
/// name), the figures right-aligned; `gap` spaces between columns.
pub fn aligned<const N: usize>(rows: &[[String; N]], gap: usize) -> Vec<String> {
    use unicode_width::UnicodeWidthStr;
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.width());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                let pad = " ".repeat(width - cell.width());
                if i > 0 {
                    line.push_str(&" ".repeat(gap));
                }
                if i < 2 {
                    line.push_str(cell);
                    line.push_str(&pad);
                } else {
                    line.push_str(&pad);
                    line.push_str(cell);
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

fn app_error(e: AppError) -> anyhow::Error {
    match e {
        AppError::Unexpected(inner) => inner,
        other => anyhow::anyhow!("{other}"),
    }
}
