//! Reports as files for the office: XLSX (Chinese headers, counts as numbers, rates as
//! percentages, a frozen header row, an 说明 sheet saying what and as of when) and CSV (the
//! main table, UTF-8 with a BOM).

use rust_xlsxwriter::Workbook;

use super::{Contacts, Figures, Progress, Rankings, Series};
use crate::error::AppResult;
use crate::export::{Cell, add_table, csv_cells, xlsx_error, zone_name};

/// One sheet: name, headers, rows.
pub struct Table {
    pub name: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    fn header_refs(&self) -> Vec<&str> {
        self.headers.iter().map(String::as_str).collect()
    }

    pub fn csv(&self) -> AppResult<Vec<u8>> {
        csv_cells(&self.header_refs(), &self.rows)
    }
}

/// The figure columns, after the group's own columns.
const FIGURE_HEADERS: [&str; 13] = [
    "户籍人口",
    "豁免（死亡、迁出）",
    "应检人数",
    "已通知",
    "已触达",
    "触达率",
    "已预约",
    "已体检",
    "体检率",
    "其中外地体检",
    "本地机构体检（按体检地）",
    "拒检",
    "拒检率",
];

fn figure_headers() -> impl Iterator<Item = String> {
    FIGURE_HEADERS.iter().map(|h| (*h).to_owned())
}

fn figure_cells(f: &Figures) -> Vec<Cell> {
    vec![
        f.population.into(),
        f.exempt.into(),
        f.target.into(),
        f.notified.into(),
        f.reached.into(),
        f.reach_rate.into(),
        f.appointed.into(),
        f.examined.into(),
        f.exam_rate.into(),
        f.examined_elsewhere.into(),
        match f.examined_here {
            Some(n) => n.into(),
            None => Cell::Text(String::new()),
        },
        f.refused.into(),
        f.refusal_rate.into(),
    ]
}

fn with_figures(head: Vec<Cell>, f: &Figures) -> Vec<Cell> {
    let mut row = head;
    row.extend(figure_cells(f));
    row
}

/// The progress table (by the report's grouping, with a 合计 row), the migrant book's
/// figures and the targets.
pub fn progress_tables(p: &Progress) -> Vec<Table> {
    let mut headers = vec!["代码".to_owned(), p.by.header().to_owned()];
    headers.extend(figure_headers());
    let mut rows: Vec<Vec<Cell>> = p
        .rows
        .iter()
        .map(|r| {
            with_figures(
                vec![r.key.clone().into(), r.name.clone().into()],
                &r.figures,
            )
        })
        .collect();
    rows.push(with_figures(vec!["".into(), "合计".into()], &p.total));

    let mut migrant_headers = vec!["代码".to_owned(), "流动类型".to_owned()];
    migrant_headers.extend(figure_headers());
    let mut migrants: Vec<Vec<Cell>> = p
        .migrants
        .iter()
        .map(|r| {
            with_figures(
                vec![r.key.clone().into(), r.name.clone().into()],
                &r.figures,
            )
        })
        .collect();
    migrants.push(with_figures(
        vec!["".into(), "流动人口合计".into()],
        &p.migrants_total,
    ));

    let targets = p
        .targets
        .iter()
        .map(|t| {
            vec![
                t.name.clone().into(),
                Cell::Percent(Some(t.goal_percent / 100.0)),
                t.target.into(),
                t.examined.into(),
                t.exam_rate.into(),
                t.status.label().into(),
            ]
        })
        .collect();
    vec![
        Table {
            name: "体检进度".to_owned(),
            headers,
            rows,
        },
        Table {
            name: "流动人口".to_owned(),
            headers: migrant_headers,
            rows: migrants,
        },
        Table {
            name: "重点人群目标".to_owned(),
            headers: [
                "人群",
                "目标体检率",
                "应检人数",
                "已体检",
                "体检率",
                "是否达标",
            ]
            .map(str::to_owned)
            .to_vec(),
            rows: targets,
        },
    ]
}

pub fn series_table(s: &Series) -> Table {
    let mut headers = vec![
        "日期".to_owned(),
        "代码".to_owned(),
        s.by.header().to_owned(),
    ];
    headers.extend(figure_headers());
    Table {
        name: "每日进度".to_owned(),
        headers,
        rows: s
            .points
            .iter()
            .map(|p| {
                with_figures(
                    vec![
                        p.day.to_string().into(),
                        p.key.clone().into(),
                        p.name.clone().into(),
                    ],
                    &p.figures,
                )
            })
            .collect(),
    }
}

pub fn rankings_table(r: &Rankings) -> Table {
    let level = r.level.header();
    let rank = |n: Option<usize>| match n {
        Some(n) => Cell::Int(n as i64),
        None => Cell::Text(String::new()),
    };
    let change = |n: Option<i64>| match n {
        Some(n) => Cell::Int(n),
        None => Cell::Text(String::new()),
    };
    Table {
        name: "排名".to_owned(),
        headers: [
            "代码",
            level,
            "应检人数",
            "已体检",
            "体检率",
            "体检率排名",
            "体检率倒数三名",
            "体检率较上期变化",
            "排名较上期变化",
            "已触达",
            "触达率",
            "触达率排名",
            "触达率倒数三名",
            "触达率较上期变化",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows: r
            .areas
            .iter()
            .map(|a| {
                vec![
                    a.code.clone().into(),
                    a.name.clone().into(),
                    a.target.into(),
                    a.examined.into(),
                    a.exam.rate.into(),
                    rank(a.exam.rank),
                    if a.exam.bottom_three { "是" } else { "" }.into(),
                    a.exam.rate_change.into(),
                    change(a.exam.rank_change),
                    a.reached.into(),
                    a.reach.rate.into(),
                    rank(a.reach.rank),
                    if a.reach.bottom_three { "是" } else { "" }.into(),
                    a.reach.rate_change.into(),
                ]
            })
            .collect(),
    }
}

pub fn contacts_tables(c: &Contacts) -> Vec<Table> {
    let mut channels: Vec<Vec<Cell>> = c
        .channels
        .iter()
        .chain([&c.messages])
        .map(|m| {
            vec![
                m.channel_name.clone().into(),
                m.provider.clone().into(),
                m.sent.into(),
                m.delivered.into(),
                m.failed.into(),
                m.unconfirmed.into(),
                m.delivery_rate.into(),
            ]
        })
        .collect();
    if let Some(last) = channels.last_mut() {
        last[0] = "合计".into();
    }
    vec![
        Table {
            name: "消息送达".to_owned(),
            headers: [
                "渠道",
                "服务商",
                "已发送",
                "已送达",
                "失败",
                "未获回执",
                "送达率",
            ]
            .map(str::to_owned)
            .to_vec(),
            rows: channels,
        },
        Table {
            name: "入户电话联系".to_owned(),
            headers: ["方式", "次数", "联系到本人或亲属"]
                .map(str::to_owned)
                .to_vec(),
            rows: c
                .attempts
                .iter()
                .map(|a| {
                    vec![
                        a.channel_name.clone().into(),
                        a.attempts.into(),
                        a.reached.into(),
                    ]
                })
                .collect(),
        },
        Table {
            name: "居民回复".to_owned(),
            headers: ["回复", "条数"].map(str::to_owned).to_vec(),
            rows: c
                .replies
                .iter()
                .map(|r| vec![r.name.clone().into(), r.replies.into()])
                .collect(),
        },
    ]
}

fn width(headers: &[String]) -> impl Fn(usize) -> f64 + '_ {
    move |col| {
        let chars = headers.get(col).map(|h| h.chars().count()).unwrap_or(6);
        (chars as f64 * 2.2).clamp(10.0, 28.0)
    }
}

/// A workbook of `tables` after an 说明 sheet of `about` lines (label, value).
pub fn workbook(about: &[(&str, String)], tables: &[Table]) -> AppResult<Vec<u8>> {
    let mut workbook = Workbook::new();
    for table in tables {
        add_table(
            &mut workbook,
            &table.name,
            &table.header_refs(),
            width(&table.headers),
            &table.rows,
        )?;
    }
    add_table(
        &mut workbook,
        "说明",
        &["项目", "内容"],
        |col| if col == 0 { 14.0 } else { 48.0 },
        about
            .iter()
            .map(|(k, v)| vec![Cell::from(*k), Cell::from(v.clone())]),
    )?;
    workbook.save_to_buffer().map_err(xlsx_error)
}

/// The lines of the 说明 sheet of a progress report.
pub fn about_progress(p: &Progress) -> Vec<(&'static str, String)> {
    let mut about = vec![
        ("体检工作", p.campaign_name.clone()),
        ("地区", p.area_name.clone()),
        ("数据截至", as_of_text(&p.as_of)),
    ];
    if let Some(from) = p.as_of.from {
        about.push(("统计起始日", from.to_string()));
        about.push((
            "说明",
            "各项为统计期内的净增数（期末数减期初数），住户迁出或豁免可使其为负；应检人数为期末数"
                .to_owned(),
        ));
    }
    for (label, value) in [
        ("年龄组", &p.slice.cohort),
        ("流动类型", &p.slice.migrant_type),
        ("特殊情况", &p.slice.special),
        ("体检方式", &p.slice.route),
    ] {
        if let Some(value) = value {
            about.push((label, value.clone()));
        }
    }
    about.push((
        "口径",
        "应检=户籍人口−豁免；触达率=已触达/应检；体检率=已体检/应检；拒检率=拒检/应检".to_owned(),
    ));
    about
}

pub fn as_of_text(as_of: &super::AsOf) -> String {
    match (as_of.day, as_of.refreshed_at) {
        (Some(day), _) => format!("{day} 日终"),
        (None, Some(at)) => {
            let zone: chrono_tz::Tz = as_of.timezone.parse().unwrap_or(crate::time::DEFAULT_ZONE);
            format!(
                "{}（{}）",
                at.with_timezone(&zone).format("%Y-%m-%d %H:%M"),
                zone_name(zone)
            )
        }
        (None, None) => String::new(),
    }
}
