//! Hostile workbooks: small files built to make the reader allocate without bound. Each is
//! refused with a 422 in Chinese, nothing is imported, and the server's peak memory (the test
//! app runs in this process) stays flat.

use std::io::{Read, Write};

use entities::{residents, users::Role};
use reqwest::StatusCode;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::Value;

use crate::helpers::{COUNTY, VILLAGE, resident_id, spawn_app};

/// The tests here measure the process's peak memory; one at a time.
static MEASURED: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

/// A real workbook (header and one valid resident) with some of its parts replaced.
fn workbook_with(replace: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    for (col, value) in ["姓名", "身份证号", "户籍地区划代码"].iter().enumerate() {
        sheet.write_string(0, col as u16, *value).unwrap();
    }
    sheet.write_string(1, 0, "张三").unwrap();
    sheet
        .write_string(1, 1, resident_id(1, "19800101"))
        .unwrap();
    sheet.write_string(1, 2, VILLAGE).unwrap();
    let original = workbook.save_to_buffer().unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(original)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(6));
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).unwrap();
        let name = entry.name().unwrap().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let bytes = replace
            .iter()
            .find(|(part, _)| *part == name)
            .map_or(bytes, |(_, replacement)| replacement.clone());
        out.start_file(name, options).unwrap();
        out.write_all(&bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

const SHEET_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#;
const SHEET_TAIL: &str = "</sheetData></worksheet>";

fn sheet(rows: &str) -> Vec<u8> {
    format!("{SHEET_HEAD}{rows}{SHEET_TAIL}").into_bytes()
}

fn inline(reference: &str, text: &str) -> String {
    format!(r#"<c r="{reference}" t="inlineStr"><is><t>{text}</t></is></c>"#)
}

/// A sheet whose header and first data row are valid, with `extra` in its second data row.
fn sheet_with_row(extra: &str) -> Vec<u8> {
    let id = resident_id(1, "19800101");
    sheet(&format!(
        r#"<row r="1">{}{}{}</row><row r="2">{}{}{}</row><row r="3">{extra}</row>"#,
        inline("A1", "姓名"),
        inline("B1", "身份证号"),
        inline("C1", "户籍地区划代码"),
        inline("A2", "张三"),
        inline("B2", &id),
        inline("C2", VILLAGE),
    ))
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Uploads `file` and checks that it is refused whole with a Chinese message, that nothing
/// was imported, and that the process's peak memory grew by less than 200 MB meanwhile.
async fn refused(file: Vec<u8>, code: &str) -> String {
    let _one_at_a_time = MEASURED.lock().await;
    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.h", Role::Office, COUNTY).await;
    // Reset the peak to what is resident now (Linux ≥ 4.0), then measure from here.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmRSS:");
    let response = app.upload_residents(&office, file).await;
    let peak = status_kib("VmHWM:");
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
        "{message}"
    );
    assert!(message.chars().count() < 200, "{message}");
    assert_eq!(residents::Entity::find().count(&app.db).await.unwrap(), 0);
    let grown_mb = peak.saturating_sub(before) / 1024;
    assert!(grown_mb < 200, "peak memory grew by {grown_mb} MB");
    message
}

#[tokio::test]
async fn a_cell_reference_far_beyond_the_last_column_is_refused() {
    let file = workbook_with(&[(
        "xl/worksheets/sheet1.xml",
        sheet_with_row(&inline("FXSHRXW3", "x")),
    )]);
    assert!(file.len() < 20_000);
    let message = refused(file, "file_limit_exceeded").await;
    assert!(message.contains("FXSHRXW"), "{message}");
    // A column Excel itself allows but no register needs.
    let file = workbook_with(&[(
        "xl/worksheets/sheet1.xml",
        sheet_with_row(&inline("XFD3", "x")),
    )]);
    refused(file, "file_limit_exceeded").await;
}

#[tokio::test]
async fn a_huge_shared_string_or_declared_count_is_refused() {
    // 32 MiB in one shared string, a file of a few dozen kilobytes.
    let mut strings = br#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>"#
        .to_vec();
    strings.extend(std::iter::repeat_n(b'a', 32 * 1024 * 1024));
    strings.extend_from_slice(b"</t></si></sst>");
    let file = workbook_with(&[("xl/sharedStrings.xml", strings)]);
    assert!(file.len() < 1024 * 1024, "{}", file.len());
    let message = refused(file, "file_limit_exceeded").await;
    assert!(message.contains("超长"), "{message}");

    // A string of 40,000 characters split into runs, none of them long by itself.
    let runs = "<r><t>".to_owned() + &"文".repeat(1000) + "</t></r>";
    let strings = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si>{}</si></sst>"#,
        runs.repeat(40)
    );
    let file = workbook_with(&[("xl/sharedStrings.xml", strings.into_bytes())]);
    let message = refused(file, "file_limit_exceeded").await;
    assert!(message.contains("32767"), "{message}");

    // A declared count calamine would reserve room for.
    let strings = r#"<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="4000000000"><si><t>a</t></si></sst>"#;
    let file = workbook_with(&[("xl/sharedStrings.xml", strings.as_bytes().to_vec())]);
    refused(file, "file_limit_exceeded").await;
}

#[tokio::test]
async fn a_huge_inline_cell_is_refused() {
    let file = workbook_with(&[(
        "xl/worksheets/sheet1.xml",
        sheet_with_row(&inline("A3", &"长".repeat(40_000))),
    )]);
    let message = refused(file, "file_limit_exceeded").await;
    assert!(message.contains("32767"), "{message}");
    // Far beyond any cell: one text of 64 MiB.
    let file = workbook_with(&[(
        "xl/worksheets/sheet1.xml",
        sheet_with_row(&inline("A3", &"x".repeat(64 * 1024 * 1024))),
    )]);
    refused(file, "file_limit_exceeded").await;
}

#[tokio::test]
async fn a_zip_bomb_is_refused() {
    // 24 MiB of empty elements that compress about a thousand to one: refused after the
    // first few megabytes, long before the end.
    let filler = "<a/>".repeat(6 * 1024 * 1024);
    let file = workbook_with(&[("xl/worksheets/sheet1.xml", sheet_with_row(&filler))]);
    assert!(file.len() < 1024 * 1024, "{}", file.len());
    let message = refused(file, "file_limit_exceeded").await;
    assert!(message.contains("压缩"), "{message}");
}

#[tokio::test]
async fn a_doctype_is_refused_and_a_plain_workbook_still_imports() {
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\">]>{}",
        String::from_utf8(sheet_with_row("")).unwrap()
    );
    let file = workbook_with(&[("xl/worksheets/sheet1.xml", bomb.into_bytes())]);
    refused(file, "file_limit_exceeded").await;

    let app = spawn_app().await;
    app.seed_areas().await;
    let (_, office) = app.user("office.h", Role::Office, COUNTY).await;
    let response = app.upload_residents(&office, workbook_with(&[])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["imported"], 1, "{body}");
}
