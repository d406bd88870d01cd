//! Properties of the parsers that take outside input — resident ID numbers, phone numbers, the
//! resident import's CSV and XLSX readers, signatures, the SMS and WeChat providers' callbacks:
//! what is valid is read back as it was written, what is not is refused, and nothing an
//! outsider can send makes them panic or take memory in proportion to what the input claims.
//! Case counts are kept small so that the whole file runs in seconds.

use std::collections::HashMap;
use std::io::Write;

use chrono::{Datelike, NaiveDate};
use proptest::prelude::*;
use proptest::test_runner::Config;

use outreach::import::stream::{BytesRead, read_rows};
use outreach::outreach::callbacks;
use outreach::registry::{MobilePhone, ResidentId, ResidentIdError, Sex};
use outreach::signature::{self, Limits};

/// The day the tests take as today.
fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()
}

fn cases(n: u32) -> Config {
    Config {
        cases: n,
        // A failing case is shrunk, but not for long.
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

/// The GB 11643 check character (ISO 7064 MOD 11-2), computed here apart from the code under
/// test.
fn check_of(first17: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap() * w)
        .sum();
    ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize]
}

/// A valid ID number: region, a birth date from 1900 to today, sequence, check character.
fn valid_id() -> impl Strategy<Value = String> {
    let first = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap();
    let days = (today() - first).num_days();
    ("[1-8][0-9]{5}", 0..=days, "[0-9]{3}").prop_map(move |(region, day, sequence)| {
        let birth = first + chrono::Duration::days(day);
        let first17 = format!("{region}{}{sequence}", birth.format("%Y%m%d"));
        let check = check_of(&first17);
        format!("{first17}{check}")
    })
}

/// Memory the process has committed at its peak, from the allocator every allocation of this
/// process goes through (mimalloc, the library's global allocator; its C function is linked
/// whatever Rust bindings are enabled).
fn peak_commit() -> usize {
    unsafe extern "C" {
        fn mi_process_info(
            elapsed_msecs: *mut usize,
            user_msecs: *mut usize,
            system_msecs: *mut usize,
            current_rss: *mut usize,
            peak_rss: *mut usize,
            current_commit: *mut usize,
            peak_commit: *mut usize,
            page_faults: *mut usize,
        );
    }
    let mut values = [0usize; 8];
    let [a, b, c, d, e, f, g, h] = &mut values;
    // SAFETY: every pointer is to a live, writable `usize`, as the function expects.
    unsafe { mi_process_info(a, b, c, d, e, f, g, h) };
    values[6]
}

/// Runs `work` and fails when it raises the process's peak of committed memory by more than
/// `limit_mib`: an input's claimed sizes (a zip entry's, an image's) must not become
/// allocations. The peak only grows, so this catches what goes beyond what earlier cases
/// needed — an allocation by a claimed size is gigabytes, far above that. The measured parts
/// of the tests take turns, so that one test's memory is not counted as another's; the
/// others here read a few bytes at a time.
fn within_memory<T>(limit_mib: usize, work: impl FnOnce() -> T) -> T {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = peak_commit();
    let out = work();
    let grown = peak_commit().saturating_sub(before) / (1024 * 1024);
    assert!(
        grown <= limit_mib,
        "the committed memory peaked {grown} MiB higher"
    );
    out
}

// --- Resident ID numbers ---------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_valid_id_round_trips(id in valid_id(), lower in any::<bool>(), wide in any::<bool>()) {
        // As people type it: a lower-case x, full-width digits, spaces around.
        let typed: String = id
            .chars()
            .map(|c| match c {
                'X' if lower => 'x',
                '0'..='9' if wide => char::from_u32('０' as u32 + (c as u32 - '0' as u32)).unwrap(),
                c => c,
            })
            .collect();
        let parsed = ResidentId::parse(&format!(" {typed} "), today()).unwrap();
        prop_assert_eq!(parsed.expose(), id.as_str());
        let birth = NaiveDate::parse_from_str(&id[6..14], "%Y%m%d").unwrap();
        prop_assert_eq!(parsed.birth_date(), birth);
        let odd = id.as_bytes()[16] % 2 == 1;
        prop_assert_eq!(parsed.sex(), if odd { Sex::Male } else { Sex::Female });
        let masked = parsed.masked();
        prop_assert!(masked.starts_with(&id[..4]) && masked.ends_with(&id[14..]));
        prop_assert!(!masked.contains(&id[6..14]), "the birth date is not shown");
    }

    #[test]
    fn any_single_character_change_is_refused(
        id in valid_id(),
        at in 0usize..18,
        by in 1u8..=10,
    ) {
        // Position 17 may also become X; every other position another digit.
        let alphabet: &[u8] = if at == 17 { b"0123456789X" } else { b"0123456789" };
        let old = alphabet.iter().position(|&c| c == id.as_bytes()[at]).unwrap();
        let new = alphabet[(old + by as usize) % alphabet.len()];
        prop_assume!(new != id.as_bytes()[at]);
        let mut changed = id.clone().into_bytes();
        changed[at] = new;
        let changed = String::from_utf8(changed).unwrap();
        let refused = ResidentId::parse(&changed, today());
        prop_assert!(
            matches!(
                refused,
                Err(ResidentIdError::CheckDigit
                    | ResidentIdError::BirthDate
                    | ResidentIdError::FutureBirthDate)
            ),
            "{} accepted after changing position {}: {:?}", changed, at, refused
        );
    }

    #[test]
    fn any_string_is_parsed_or_refused_without_panicking(
        raw in prop_oneof![any::<String>(), "[0-9０-９xX ]{15,20}", "[0-9]{17}[0-9Xx]"],
    ) {
        if let Ok(id) = ResidentId::parse(&raw, today()) {
            let text = id.expose();
            prop_assert_eq!(text.len(), 18);
            prop_assert_eq!(text.chars().last().unwrap(), check_of(&text[..17]));
            prop_assert!(id.birth_date() <= today() && id.birth_date().year() >= 1880);
        }
        // Masking takes anything typed.
        let _ = outreach::registry::mask_raw_id(&raw);
    }
}

// --- Phone numbers ---------------------------------------------------------------------------

/// A mainland mobile number as a provider or a person may write it.
fn written_mobile() -> impl Strategy<Value = (String, String)> {
    (
        "1[3-9][0-9]{9}",
        prop_oneof![
            Just(""),
            Just("+86"),
            Just("86"),
            Just("0086"),
            Just("+86 ")
        ],
        any::<bool>(),
    )
        .prop_map(|(digits, prefix, dashes)| {
            let body = if dashes {
                format!("{}-{}-{}", &digits[..3], &digits[3..7], &digits[7..])
            } else {
                digits.clone()
            };
            (format!("{prefix}{body}"), digits)
        })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_written_mobile_number_is_read_as_its_eleven_digits((written, digits) in written_mobile()) {
        let phone = MobilePhone::parse(&written).unwrap();
        prop_assert_eq!(phone.expose(), digits.as_str());
        prop_assert_eq!(phone.masked(), format!("{}****{}", &digits[..3], &digits[7..]));
        if !written.contains('-') && !written.contains(' ') {
            let normalised = callbacks::normalise_mainland_mobile(&written);
            prop_assert_eq!(normalised.as_deref(), Some(digits.as_str()));
        }
    }

    #[test]
    fn any_string_is_a_mobile_number_or_refused(
        raw in prop_oneof![any::<String>(), "[+0-9 ()０-９-]{0,18}"],
    ) {
        for parsed in [
            MobilePhone::parse(&raw).map(|p| p.expose().to_owned()),
            callbacks::normalise_mainland_mobile(&raw),
        ]
        .into_iter()
        .flatten()
        {
            prop_assert_eq!(parsed.len(), 11);
            prop_assert!(parsed.starts_with('1') && parsed.bytes().all(|b| b.is_ascii_digit()));
        }
        if let Some(phone) = MobilePhone::parse(&raw) {
            prop_assert!(!phone.masked().contains(&phone.expose()[3..7]));
        }
        let _ = outreach::registry::fields::mask_raw_phone(&raw);
    }
}

// --- The resident import's readers ----------------------------------------------------------

/// Reads `bytes` as the resident import reads a file: the rows it hands over, or the error.
fn read_file(bytes: &[u8]) -> (usize, bool) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    file.flush().unwrap();
    let mut rows = 0usize;
    let mut widest = 0usize;
    let result = read_rows(file.path(), &BytesRead::default(), |row| {
        rows += 1;
        widest = widest.max(row.values.len());
        // Only a workbook says which cells held numbers.
        assert!(row.numeric.is_empty() || row.numeric.len() == row.values.len());
        true
    });
    assert!(widest <= 256, "a row of {widest} columns was handed over");
    (rows, result.is_ok())
}

/// Text that looks like a register: fields of digits, Chinese, quotes, separators, line ends.
fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just("姓名".as_bytes().to_vec()),
            Just(b",".to_vec()),
            Just(b"\t".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(vec![0xEF, 0xBB, 0xBF]),
            Just(vec![0xFF, 0xFE]),
            Just(vec![0xB9, 0xFE]),
            "[0-9X]{1,18}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 1..8),
        ],
        0..200,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn the_csv_reader_takes_any_bytes_without_panicking_or_growing(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..4096), csv_like()],
    ) {
        within_memory(64, || read_file(&bytes));
        // The small-file reader (areas, exams, calendars) and the text decoder likewise.
        let _ = outreach::import::CsvTable::read(&bytes);
        let _ = outreach::import::decode_text(&bytes);
    }
}

/// A small valid workbook as a spreadsheet program writes it.
fn workbook() -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (col, header) in ["姓名", "身份证号", "户籍地区划代码", "联系电话"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, col as u16, *header).unwrap();
    }
    for row in 1..4u32 {
        sheet.write_string(row, 0, "玛依拉·胡安").unwrap();
        sheet.write_string(row, 1, "65402519600101001X").unwrap();
        sheet.write_string(row, 2, "654025100201").unwrap();
        sheet.write_number(row, 3, 13800001111.0).unwrap();
    }
    book.save_to_buffer().unwrap()
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn the_xlsx_reader_takes_any_archive_without_panicking_or_growing(
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
        tail in prop::collection::vec(any::<u8>(), 0..2048),
        whole in any::<bool>(),
    ) {
        // A real workbook with some bytes changed (its sizes, offsets, compressed data), or
        // the zip signature followed by junk.
        let bytes = if whole {
            let mut bytes = workbook();
            for (at, value) in &changes {
                let at = at.index(bytes.len());
                bytes[at] = *value;
            }
            bytes
        } else {
            [&b"PK\x03\x04"[..], &tail].concat()
        };
        let (rows, ok) = within_memory(64, || read_file(&bytes));
        if whole && changes.is_empty() {
            prop_assert!(ok && rows == 4, "the untouched workbook is read whole");
        }
        let _ = outreach::import::workbook::check_xlsx(std::io::Cursor::new(&bytes));
    }
}

// --- Signatures ------------------------------------------------------------------------------

/// A signature pad's JSON: a canvas and strokes of points, with sizes and coordinates from
/// the plausible to the absurd.
fn strokes_json() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        0.0f64..500.0,
        Just(-1.0),
        Just(1e12),
        Just(f64::MAX),
        Just(0.0)
    ];
    let point = (number.clone(), number.clone());
    (
        number.clone(),
        number,
        prop::collection::vec(prop::collection::vec(point, 0..20), 0..6),
    )
        .prop_map(|(width, height, strokes)| {
            serde_json::json!({"width": width, "height": height, "strokes": strokes}).to_string()
        })
}

/// A PNG of `width` × `height`, white with a black band, as a test signature.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut pixels = vec![255u8; (width * height) as usize];
    for y in height / 2 - 3..height / 2 + 3 {
        for x in width / 10..width * 9 / 10 {
            pixels[(y * width + x) as usize] = 0;
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
    out
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn a_png_is_decoded_within_the_limits_or_refused(
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        junk in prop::collection::vec(any::<u8>(), 0..1024),
        real in any::<bool>(),
    ) {
        let limits = Limits::default();
        let bytes = if real {
            let mut bytes = png(400, 150);
            for (at, value) in &changes {
                let at = at.index(bytes.len());
                bytes[at] = *value;
            }
            bytes
        } else {
            [&b"\x89PNG\r\n\x1a\n"[..], &junk].concat()
        };
        let decoded = within_memory(64, || signature::from_png(&bytes, &limits));
        if let Ok(image) = decoded {
            prop_assert!(image.width <= limits.max_width && image.height <= limits.max_height);
            prop_assert!(image.width >= limits.min_width && image.height >= limits.min_height);
        } else if real && changes.is_empty() {
            prop_assert!(false, "the untouched signature was refused: {:?}", decoded.err());
        }
    }

    #[test]
    fn strokes_are_drawn_within_the_limits_or_refused(
        json in prop_oneof![strokes_json(), any::<String>()],
    ) {
        let limits = Limits::default();
        if let Ok(image) = within_memory(64, || signature::from_strokes(&json, &limits)) {
            prop_assert!(image.width <= limits.max_width && image.height <= limits.max_height);
            prop_assert!(!image.png.is_empty());
        }
    }

}

/// An SVG's side in pixels: mostly a pad's size, sometimes absurd (drawn scaled down to the
/// largest allowed page, which is slow in a debug build).
fn side() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 1u32..600, 1 => 1u32..100_000]
}

proptest! {
    // Drawing a page of up to 2000 × 1000 pixels is slow in a debug build: few cases.
    #![proptest_config(cases(24))]

    #[test]
    fn any_svg_text_is_drawn_within_the_limits_or_refused(
        svg in prop_oneof![
            any::<String>(),
            (side(), side()).prop_map(|(w, h)| format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"><path d="M1 1 L{w} {h}" stroke="black"/></svg>"#
            )),
        ],
    ) {
        let limits = Limits::default();
        if let Ok(image) = within_memory(64, || signature::from_svg(&svg, &limits)) {
            prop_assert!(image.width <= limits.max_width && image.height <= limits.max_height);
        }
    }
}

// --- The providers' callbacks ----------------------------------------------------------------

/// JSON as a provider might send it: objects whose keys are the fields the parsers look for,
/// with values of every JSON kind, alone or in arrays.
fn callback_json() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![
        "biz_id",
        "success",
        "err_code",
        "err_msg",
        "report_time",
        "phone_number",
        "content",
        "send_time",
        "sequence_id",
        "sign_name",
        "sid",
        "report_status",
        "errmsg",
        "description",
        "user_receive_time",
        "mobile",
        "text",
        "nationcode",
        "time",
        "sign",
    ]);
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
        prop_oneof![
            Just("13812345678"),
            Just("+8613812345678"),
            Just("SUCCESS"),
            Just("FAIL"),
            Just("true"),
            Just("2026-12-30 10:00:05"),
            Just("86"),
            Just("9999999999999"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    let object = prop::collection::btree_map(key, value, 0..10).prop_map(|fields| {
        serde_json::Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    });
    prop_oneof![
        object.clone().prop_map(|o| o.to_string().into_bytes()),
        prop::collection::vec(object, 0..5)
            .prop_map(|items| serde_json::Value::from(items).to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn jasmin_form() -> impl Strategy<Value = HashMap<String, String>> {
    let key = prop::sample::select(vec![
        "id",
        "message_status",
        "level",
        "from",
        "to",
        "coding",
        "content",
        "binary",
    ]);
    let value = prop_oneof![
        any::<String>(),
        "[0-9a-fA-F]{0,40}",
        prop::sample::select(vec![
            "1", "2", "3", "8", "0", "ESME_ROK", "DELIVRD", "UNDELIV"
        ])
        .prop_map(str::to_owned),
        Just("8613812345678".to_owned()),
    ];
    prop::collection::hash_map(key.prop_map(str::to_owned), value, 0..8)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn the_json_callbacks_take_any_body_without_panicking(body in callback_json()) {
        for receipt in callbacks::aliyun_reports(&body).unwrap_or_default() {
            prop_assert_eq!(receipt.provider, "aliyun");
        }
        for receipt in callbacks::tencent_statuses(&body).unwrap_or_default() {
            prop_assert_eq!(receipt.provider, "tencent");
        }
        let replies = callbacks::aliyun_replies(&body)
            .unwrap_or_default()
            .into_iter()
            .chain(callbacks::tencent_reply(&body).ok().flatten());
        for reply in replies {
            prop_assert_eq!(reply.from_phone.len(), 11);
        }
    }

    #[test]
    fn the_jasmin_forms_take_any_fields_without_panicking(form in jasmin_form()) {
        let _ = callbacks::jasmin_dlr(&form);
        if let Ok(Some(reply)) = callbacks::jasmin_mo(&form) {
            prop_assert_eq!(reply.from_phone.len(), 11);
            prop_assert!(!reply.text.is_empty());
        }
    }

    #[test]
    fn a_jasmin_reply_in_ucs2_hex_is_read_as_its_text(text in "\\PC{1,70}", as_binary in any::<bool>()) {
        let hex: String = text
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .map(|b| format!("{b:02X}"))
            .collect();
        let mut form = HashMap::from([
            ("from".to_owned(), "8613812345678".to_owned()),
            ("coding".to_owned(), "8".to_owned()),
            ("id".to_owned(), "mo-1".to_owned()),
        ]);
        form.insert((if as_binary { "binary" } else { "content" }).to_owned(), hex);
        let reply = callbacks::jasmin_mo(&form).unwrap().unwrap();
        prop_assert_eq!(reply.text, text);
        prop_assert_eq!(reply.from_phone, "13812345678");
    }

    #[test]
    fn a_jasmin_binary_field_that_is_not_hex_is_refused(
        before in "([0-9a-fA-F]{2}){0,3}",
        // Signs included: Rust's number parsing takes a leading `+` as part of a number.
        bad in prop_oneof![Just("+".to_owned()), Just("-".to_owned()), "[^0-9a-fA-F]"],
        after in "[0-9a-fA-F]([0-9a-fA-F]{2}){0,3}",
        ucs2 in any::<bool>(),
    ) {
        let binary = format!("{before}{bad}{after}");
        let form = HashMap::from([
            ("from".to_owned(), "8613812345678".to_owned()),
            ("coding".to_owned(), (if ucs2 { "8" } else { "0" }).to_owned()),
            ("binary".to_owned(), binary.clone()),
        ]);
        let read = callbacks::jasmin_mo(&form);
        prop_assert!(read.is_err(), "binary {:?} was read as {:?}", binary, read);
    }

    #[test]
    fn any_wechat_push_is_read_or_ignored_without_panicking(
        xml in prop_oneof![
            any::<String>(),
            (
                prop::sample::select(vec!["TEMPLATESENDJOBFINISH", "subscribe", ""]),
                "[0-9]{0,20}",
                prop::sample::select(vec!["success", "failed:user block", "failed: system failed", "x"]),
                prop_oneof![Just("1767000000".to_owned()), any::<i64>().prop_map(|n| n.to_string()), any::<String>()],
            )
                .prop_map(|(event, id, status, time)| format!(
                    "<xml><ToUserName><![CDATA[gh]]></ToUserName><CreateTime>{time}</CreateTime>\
                     <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>\
                     <MsgID>{id}</MsgID><Status><![CDATA[{status}]]></Status></xml>"
                )),
        ],
        token in any::<String>(),
        signature in any::<String>(),
    ) {
        if let Some(receipt) = callbacks::wechat_event(&xml) {
            prop_assert_eq!(receipt.provider, "wechat");
            prop_assert!(!receipt.provider_message_id.is_empty());
        }
        let _ = callbacks::wechat_signature_ok(&token, "1767000000", "nonce", &signature);
    }
}
