//! Message templates: one file per kind and locale under `message-templates/`, rendered with
//! minijinja in strict mode. Every template is compiled and rendered against sample data when
//! the set is loaded, so a broken one stops start-up with its file and line instead of
//! reaching a resident. The files are built into the binary; `messaging.templates_dir` points
//! at a county's own copies instead.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::vocabulary::Language;

/// What a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// The day before: where, when, and how to prepare (fasting, ID card).
    AppointmentNotice,
    SameDayReminder,
    /// The day after a missed appointment.
    MissedFollowup,
    RescheduleConfirmation,
    /// The call to migrant residents to come home for the exam in a holiday window.
    MigrantWave,
    OptOutConfirmation,
    /// The answer to a "2"/改期 reply: the next days with room.
    RescheduleOptions,
}

impl MessageKind {
    pub const ALL: [MessageKind; 7] = [
        MessageKind::AppointmentNotice,
        MessageKind::SameDayReminder,
        MessageKind::MissedFollowup,
        MessageKind::RescheduleConfirmation,
        MessageKind::MigrantWave,
        MessageKind::OptOutConfirmation,
        MessageKind::RescheduleOptions,
    ];

    pub fn code(self) -> &'static str {
        match self {
            MessageKind::AppointmentNotice => "appointment_notice",
            MessageKind::SameDayReminder => "same_day_reminder",
            MessageKind::MissedFollowup => "missed_followup",
            MessageKind::RescheduleConfirmation => "reschedule_confirmation",
            MessageKind::MigrantWave => "migrant_wave",
            MessageKind::OptOutConfirmation => "opt_out_confirmation",
            MessageKind::RescheduleOptions => "reschedule_options",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The title of the message (e-mail subject, WeChat first line).
    pub fn title(self) -> &'static str {
        match self {
            MessageKind::AppointmentNotice => "体检预约通知",
            MessageKind::SameDayReminder => "今日体检提醒",
            MessageKind::MissedFollowup => "体检补约提醒",
            MessageKind::RescheduleConfirmation => "体检改期确认",
            MessageKind::MigrantWave => "回乡体检通知",
            MessageKind::OptOutConfirmation => "退订确认",
            MessageKind::RescheduleOptions => "可改约日期",
        }
    }

    /// The most SMS segments one message of this kind may take in `locale` (each costs a
    /// text). Uyghur and Kazakh in Arabic script say the same in about twice the characters
    /// of Chinese, so they may take one segment more; so may the kinds that carry the
    /// resident's link (about 45 characters: up to a segment of its own).
    pub fn max_segments(self, locale: Locale) -> usize {
        let text = match self {
            MessageKind::AppointmentNotice | MessageKind::MigrantWave => 3,
            _ => 2,
        };
        let chinese = text + usize::from(carries_link(self));
        match locale {
            Locale::ZhCn => chinese,
            Locale::Ug | Locale::Kk => chinese + 1,
        }
    }

    /// Whether the SMS carries the unsubscribe hint (not the confirmation of unsubscribing).
    fn offers_opt_out(self) -> bool {
        self != MessageKind::OptOutConfirmation
    }
}

/// Template locales: zh-CN is required for every kind; ug and kk fall back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Locale {
    ZhCn,
    Ug,
    Kk,
}

impl Locale {
    pub const ALL: [Locale; 3] = [Locale::ZhCn, Locale::Ug, Locale::Kk];

    pub fn code(self) -> &'static str {
        match self {
            Locale::ZhCn => "zh-CN",
            Locale::Ug => "ug",
            Locale::Kk => "kk",
        }
    }

    pub fn of(language: Language) -> Locale {
        match language {
            Language::Zh => Locale::ZhCn,
            Language::Ug => Locale::Ug,
            Language::Kk => Locale::Kk,
        }
    }
}

/// What a template may use. Every field is always present (strict mode refuses a misspelt
/// name); fields a kind does not need are empty.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MessageContext {
    pub resident_name: String,
    /// Sent to a relative's phone: the text asks them to pass it on (请转告…).
    pub relay: bool,
    pub campaign_name: String,
    pub institution_name: String,
    pub institution_address: String,
    /// e.g. `3月15日`.
    pub day: String,
    /// e.g. `上午9:00`.
    pub time: String,
    /// The village committee's phone for questions.
    pub cadre_phone: String,
    pub window_from: String,
    pub window_to: String,
    /// The days offered for a new appointment, e.g. `12月3日、12月4日`.
    pub options: String,
    /// The resident's own page (`{public_url}/r/{code}`): confirm, move or opt out. Empty
    /// when `http.public_url` is not set or the message is about no appointment.
    pub link: String,
}

impl MessageContext {
    /// The data every template is test-rendered with at load.
    pub fn sample() -> Self {
        Self {
            resident_name: "阿依古丽·买买提".to_owned(),
            relay: false,
            campaign_name: "2026年全民健康体检".to_owned(),
            institution_name: "新源县阿勒玛勒镇卫生院".to_owned(),
            institution_address: "新源县阿勒玛勒镇团结路18号".to_owned(),
            day: "12月31日".to_owned(),
            time: "上午9:30".to_owned(),
            cadre_phone: "0999-5123456".to_owned(),
            window_from: "1月20日".to_owned(),
            window_to: "2月20日".to_owned(),
            options: "1月5日、1月6日、1月8日".to_owned(),
            link: "https://tijian.xinyuan.gov.cn/r/Ab3dE5gH7jK9".to_owned(),
        }
    }
}

/// A template that cannot be used, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// e.g. `message-templates/appointment_notice/zh-CN.txt`.
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for TemplateError {}

/// A rendered SMS: the signature, the text and (for most kinds) the unsubscribe hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sms {
    pub text: String,
    /// Texts the carrier bills: 70 characters in one, 67 in each beyond.
    pub segments: usize,
}

/// SMS segments of a text in UCS-2 (any Chinese, Uyghur or Kazakh text: neither Han nor
/// Arabic script fits the 7-bit alphabet): one up to 70 characters, then 67 each.
pub fn segments(text: &str) -> usize {
    // Billed in UTF-16 code units: a character outside the basic plane takes two.
    let n = text.encode_utf16().count();
    if n <= 70 { 1 } else { n.div_ceil(67) }
}

/// The built-in texts: zh-CN, and Uyghur and Kazakh in Arabic script (see
/// `message-templates/README.md` on having those checked before use).
const EMBEDDED: &[(&str, &str, &str)] = &[
    (
        "appointment_notice",
        "zh-CN",
        include_str!("../../message-templates/appointment_notice/zh-CN.txt"),
    ),
    (
        "appointment_notice",
        "ug",
        include_str!("../../message-templates/appointment_notice/ug.txt"),
    ),
    (
        "appointment_notice",
        "kk",
        include_str!("../../message-templates/appointment_notice/kk.txt"),
    ),
    (
        "same_day_reminder",
        "zh-CN",
        include_str!("../../message-templates/same_day_reminder/zh-CN.txt"),
    ),
    (
        "same_day_reminder",
        "ug",
        include_str!("../../message-templates/same_day_reminder/ug.txt"),
    ),
    (
        "same_day_reminder",
        "kk",
        include_str!("../../message-templates/same_day_reminder/kk.txt"),
    ),
    (
        "missed_followup",
        "zh-CN",
        include_str!("../../message-templates/missed_followup/zh-CN.txt"),
    ),
    (
        "missed_followup",
        "ug",
        include_str!("../../message-templates/missed_followup/ug.txt"),
    ),
    (
        "missed_followup",
        "kk",
        include_str!("../../message-templates/missed_followup/kk.txt"),
    ),
    (
        "reschedule_confirmation",
        "zh-CN",
        include_str!("../../message-templates/reschedule_confirmation/zh-CN.txt"),
    ),
    (
        "reschedule_confirmation",
        "ug",
        include_str!("../../message-templates/reschedule_confirmation/ug.txt"),
    ),
    (
        "reschedule_confirmation",
        "kk",
        include_str!("../../message-templates/reschedule_confirmation/kk.txt"),
    ),
    (
        "migrant_wave",
        "zh-CN",
        include_str!("../../message-templates/migrant_wave/zh-CN.txt"),
    ),
    (
        "migrant_wave",
        "ug",
        include_str!("../../message-templates/migrant_wave/ug.txt"),
    ),
    (
        "migrant_wave",
        "kk",
        include_str!("../../message-templates/migrant_wave/kk.txt"),
    ),
    (
        "opt_out_confirmation",
        "zh-CN",
        include_str!("../../message-templates/opt_out_confirmation/zh-CN.txt"),
    ),
    (
        "opt_out_confirmation",
        "ug",
        include_str!("../../message-templates/opt_out_confirmation/ug.txt"),
    ),
    (
        "opt_out_confirmation",
        "kk",
        include_str!("../../message-templates/opt_out_confirmation/kk.txt"),
    ),
    (
        "reschedule_options",
        "zh-CN",
        include_str!("../../message-templates/reschedule_options/zh-CN.txt"),
    ),
    (
        "reschedule_options",
        "ug",
        include_str!("../../message-templates/reschedule_options/ug.txt"),
    ),
    (
        "reschedule_options",
        "kk",
        include_str!("../../message-templates/reschedule_options/kk.txt"),
    ),
];

/// The loaded, checked set of templates.
pub struct Templates {
    env: Environment<'static>,
    /// (kind, locale) → template name in `env`.
    names: BTreeMap<(MessageKind, Locale), String>,
    signature: String,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("templates", &self.names.values().collect::<Vec<_>>())
            .field("signature", &self.signature)
            .finish()
    }
}

fn file_of(kind: &str, locale: &str) -> String {
    format!("message-templates/{kind}/{locale}.txt")
}

impl Templates {
    /// The templates built into the binary. `signature` is the SMS signature without 【】.
    pub fn embedded(signature: &str) -> Result<Self, TemplateError> {
        Self::from_sources(
            EMBEDDED
                .iter()
                .map(|(kind, locale, text)| {
                    (
                        kind.to_string(),
                        locale.to_string(),
                        file_of(kind, locale),
                        text.to_string(),
                    )
                })
                .collect(),
            signature,
        )
    }

    /// A county's own templates: `dir/<kind>/<locale>.txt`. Files of unknown kinds or locales
    /// are errors (a misspelt folder would otherwise be silently ignored).
    pub fn from_dir(dir: &Path, signature: &str) -> Result<Self, TemplateError> {
        let unreadable = |path: &Path, e: std::io::Error| TemplateError {
            file: path.display().to_string(),
            line: None,
            message: format!("cannot read: {e}"),
        };
        let mut sources = Vec::new();
        let kinds = std::fs::read_dir(dir).map_err(|e| unreadable(dir, e))?;
        for kind in kinds {
            let kind = kind.map_err(|e| unreadable(dir, e))?.path();
            if !kind.is_dir() {
                continue;
            }
            let kind_name = kind
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            for file in std::fs::read_dir(&kind).map_err(|e| unreadable(&kind, e))? {
                let path = file.map_err(|e| unreadable(&kind, e))?.path();
                let Some(locale) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".txt"))
                else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).map_err(|e| unreadable(&path, e))?;
                let label = path.display().to_string();
                sources.push((kind_name.clone(), locale.to_owned(), label, text));
            }
        }
        Self::from_sources(sources, signature)
    }

    /// `sources`: (kind, locale, file as shown in errors, text).
    fn from_sources(
        sources: Vec<(String, String, String, String)>,
        signature: &str,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut names = BTreeMap::new();
        let fields: Vec<String> = match serde_json::to_value(MessageContext::sample()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        for (kind_code, locale_code, file, text) in sources {
            let error = |line, message: String| TemplateError {
                file: file.clone(),
                line,
                message,
            };
            let kind = MessageKind::ALL
                .into_iter()
                .find(|k| k.code() == kind_code)
                .ok_or_else(|| error(None, format!("unknown message kind {kind_code:?}")))?;
            let locale = Locale::ALL
                .into_iter()
                .find(|l| l.code() == locale_code)
                .ok_or_else(|| {
                    error(
                        None,
                        format!("unknown locale {locale_code:?} (zh-CN, ug, kk)"),
                    )
                })?;
            env.add_template_owned(file.clone(), text.trim_end().to_owned())
                .map_err(|e| error(e.line(), e.to_string()))?;
            // Strict rendering only sees the branches the sample takes; every name used
            // anywhere must be one the context has.
            let template = env
                .get_template(&file)
                .map_err(|e| error(e.line(), e.to_string()))?;
            let mut unknown: Vec<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|name| !fields.contains(name))
                .collect();
            if !unknown.is_empty() {
                unknown.sort();
                return Err(error(
                    None,
                    format!(
                        "unknown variable {}; known: {}",
                        unknown.join(", "),
                        fields.join(", ")
                    ),
                ));
            }
            names.insert((kind, locale), file);
        }
        let templates = Self {
            env,
            names,
            signature: signature.trim().to_owned(),
        };
        for kind in MessageKind::ALL {
            if !templates.names.contains_key(&(kind, Locale::ZhCn)) {
                return Err(TemplateError {
                    file: file_of(kind.code(), "zh-CN"),
                    line: None,
                    message: "missing: every kind needs a zh-CN template".to_owned(),
                });
            }
        }
        let sample = MessageContext::sample();
        for (&(kind, locale), file) in &templates.names {
            for relay in [false, true] {
                let context = MessageContext {
                    relay,
                    ..sample.clone()
                };
                let sms = templates.render_sms(kind, locale, &context)?;
                if sms.segments > kind.max_segments(locale) {
                    return Err(TemplateError {
                        file: file.clone(),
                        line: None,
                        message: format!(
                            "the SMS takes {} segments with the sample data; at most {} for {} in {}",
                            sms.segments,
                            kind.max_segments(locale),
                            kind.code(),
                            locale.code()
                        ),
                    });
                }
            }
        }
        Ok(templates)
    }

    /// The text of a message in the resident's locale, or zh-CN where that is not written.
    pub fn render(
        &self,
        kind: MessageKind,
        locale: Locale,
        context: &MessageContext,
    ) -> Result<String, TemplateError> {
        let name = self
            .names
            .get(&(kind, locale))
            .or_else(|| self.names.get(&(kind, Locale::ZhCn)))
            .ok_or_else(|| TemplateError {
                file: file_of(kind.code(), "zh-CN"),
                line: None,
                message: "missing".to_owned(),
            })?;
        let error = |e: minijinja::Error| TemplateError {
            file: name.clone(),
            line: e.line(),
            message: e.to_string(),
        };
        let template = self.env.get_template(name).map_err(error)?;
        Ok(template
            .render(minijinja::value::Serde(context))
            .map_err(error)?
            .trim()
            .to_owned())
    }

    /// The SMS: 【signature】, the text, and the unsubscribe hint (回TD退订).
    pub fn render_sms(
        &self,
        kind: MessageKind,
        locale: Locale,
        context: &MessageContext,
    ) -> Result<Sms, TemplateError> {
        let body = self.render(kind, locale, context)?;
        let mut text = format!("【{}】{body}", self.signature);
        if kind.offers_opt_out() {
            text.push_str("回TD退订");
        }
        Ok(Sms {
            segments: segments(&text),
            text,
        })
    }
}

/// The kinds of message that carry the link: those about an appointment the resident can
/// still act on.
pub fn carries_link(kind: MessageKind) -> bool {
    matches!(
        kind,
        MessageKind::AppointmentNotice
            | MessageKind::SameDayReminder
            | MessageKind::RescheduleConfirmation
            | MessageKind::RescheduleOptions
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, kind: &str, locale: &str, text: &str) {
        std::fs::create_dir_all(dir.join(kind)).unwrap();
        std::fs::write(dir.join(kind).join(format!("{locale}.txt")), text).unwrap();
    }

    fn copy_embedded(dir: &Path) {
        for (kind, locale, text) in EMBEDDED {
            write(dir, kind, locale, text);
        }
    }

    #[test]
    fn the_built_in_templates_load_and_fit_their_segments() {
        let templates = Templates::embedded("新源县卫健委").unwrap();
        let sample = MessageContext::sample();
        let sms = templates
            .render_sms(MessageKind::AppointmentNotice, Locale::ZhCn, &sample)
            .unwrap();
        assert!(
            sms.text.starts_with("【新源县卫健委】阿依古丽·买买提您好"),
            "{}",
            sms.text
        );
        assert!(sms.text.contains("禁食") && sms.text.contains("身份证"));
        assert!(sms.text.contains("新源县阿勒玛勒镇团结路18号"));
        assert!(sms.text.ends_with("回TD退订"));
        assert_eq!(sms.segments, segments(&sms.text));
        assert!(sms.segments <= 3);
        let relayed = templates
            .render_sms(
                MessageKind::AppointmentNotice,
                Locale::ZhCn,
                &MessageContext {
                    relay: true,
                    ..sample.clone()
                },
            )
            .unwrap();
        assert!(
            relayed
                .text
                .starts_with("【新源县卫健委】请转告阿依古丽·买买提：")
        );
        let opt_out = templates
            .render_sms(MessageKind::OptOutConfirmation, Locale::ZhCn, &sample)
            .unwrap();
        assert!(!opt_out.text.contains("回TD退订"));
        // Every kind has its Uyghur and Kazakh text, in Arabic script, billed as UCS-2.
        let arabic = |text: &str| text.chars().any(|c| ('\u{0600}'..='\u{06FF}').contains(&c));
        for kind in MessageKind::ALL {
            let chinese = templates.render(kind, Locale::ZhCn, &sample).unwrap();
            for locale in [Locale::Ug, Locale::Kk] {
                let sms = templates.render_sms(kind, locale, &sample).unwrap();
                assert!(arabic(&sms.text), "{kind:?} {locale:?}: {}", sms.text);
                assert!(!sms.text.contains(&chinese), "{kind:?} {locale:?}");
                assert_eq!(sms.segments, segments(&sms.text));
                assert!(
                    sms.segments <= kind.max_segments(locale),
                    "{kind:?} {locale:?}"
                );
            }
        }
        let uyghur = templates
            .render(MessageKind::SameDayReminder, Locale::Ug, &sample)
            .unwrap();
        assert!(uyghur.starts_with("阿依古丽·买买提 ياخشىمۇسىز"), "{uyghur}");
    }

    #[test]
    fn a_locale_missing_from_a_countys_own_set_falls_back_to_zh_cn() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, locale, text) in EMBEDDED {
            if *locale == "zh-CN" {
                write(dir.path(), kind, locale, text);
            }
        }
        let templates = Templates::from_dir(dir.path(), "卫健委").unwrap();
        let sample = MessageContext::sample();
        assert_eq!(
            templates
                .render(MessageKind::SameDayReminder, Locale::Kk, &sample)
                .unwrap(),
            templates
                .render(MessageKind::SameDayReminder, Locale::ZhCn, &sample)
                .unwrap()
        );
    }

    #[test]
    fn segments_follow_the_ucs2_rule() {
        assert_eq!(segments(&"字".repeat(70)), 1);
        assert_eq!(segments(&"字".repeat(71)), 2);
        assert_eq!(segments(&"字".repeat(134)), 2);
        assert_eq!(segments(&"字".repeat(135)), 3);
        // Arabic script is UCS-2 too: 70 letters in one segment, 67 in each beyond.
        assert_eq!(segments(&"ئ".repeat(70)), 1);
        assert_eq!(segments(&"ئ".repeat(71)), 2);
        assert_eq!(segments(&"ٴ".repeat(135)), 3);
        // A character outside the basic plane counts twice.
        assert_eq!(segments(&format!("{}𠀀", "字".repeat(69))), 2);
    }

    #[test]
    fn a_written_locale_is_used_and_bad_templates_are_refused_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        copy_embedded(dir.path());
        write(
            dir.path(),
            "same_day_reminder",
            "kk",
            "{{ resident_name }} — бүгін тексеру",
        );
        let templates = Templates::from_dir(dir.path(), "卫健委").unwrap();
        let text = templates
            .render(
                MessageKind::SameDayReminder,
                Locale::Kk,
                &MessageContext::sample(),
            )
            .unwrap();
        assert_eq!(text, "阿依古丽·买买提 — бүгін тексеру");

        // A syntax error on line 2.
        write(
            dir.path(),
            "missed_followup",
            "ug",
            "ياخشىمۇسىز\n{% if relay %}",
        );
        let err = Templates::from_dir(dir.path(), "卫健委").unwrap_err();
        assert!(err.file.ends_with("missed_followup/ug.txt"), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
        std::fs::remove_file(dir.path().join("missed_followup/ug.txt")).unwrap();

        // A misspelt variable, even in a branch the sample data never takes.
        write(
            dir.path(),
            "migrant_wave",
            "ug",
            "{% if relay %}{{ resident_name }}{% else %}{{ resident_nam }}{% endif %}",
        );
        let err = Templates::from_dir(dir.path(), "卫健委").unwrap_err();
        assert!(err.file.ends_with("migrant_wave/ug.txt"), "{err}");
        assert!(err.message.contains("resident_nam"), "{err}");
        std::fs::remove_file(dir.path().join("migrant_wave/ug.txt")).unwrap();

        // Too long for its segments.
        write(dir.path(), "same_day_reminder", "zh-CN", &"很".repeat(200));
        let err = Templates::from_dir(dir.path(), "卫健委").unwrap_err();
        assert!(err.message.contains("segments"), "{err}");

        // A kind without its zh-CN text, and an unknown locale.
        std::fs::remove_file(dir.path().join("same_day_reminder/zh-CN.txt")).unwrap();
        let err = Templates::from_dir(dir.path(), "卫健委").unwrap_err();
        assert_eq!(
            err.file, "message-templates/same_day_reminder/zh-CN.txt",
            "{err}"
        );
        copy_embedded(dir.path());
        write(dir.path(), "same_day_reminder", "fr", "bonjour");
        let err = Templates::from_dir(dir.path(), "卫健委").unwrap_err();
        assert!(err.message.contains("unknown locale"), "{err}");
    }
}
