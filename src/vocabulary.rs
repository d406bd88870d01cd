//! Closed vocabularies — contact channels, refusal reasons, migrant types, languages — as
//! enums written once with their stored code and Chinese label, by one macro, so that every
//! vocabulary is stored, sent, documented and read back the same way.

/// Declares a vocabulary: an enum whose variants each have a code (stored in the database and
/// written on the wire) and a Chinese label, with `ALL`, `CODES`, `code()`, `label()` and
/// `parse()`, serde that writes and reads only the codes, and an OpenAPI schema listing them.
///
/// `parse` takes the code exactly. A vocabulary declared `by words` is also read from what
/// people write in import files: its Chinese label and the aliases after it (`"汉语" | "中文"`),
/// around spaces and in any case of the code.
///
/// ```ignore
/// vocabulary!(
///     /// Preferred language for messages.
///     Language by words {
///         Zh => "zh", "汉语" | "中文";
///         Ug => "ug", "维吾尔语";
///     }
/// );
/// ```
macro_rules! vocabulary {
    (
        $(#[doc = $doc:literal])*
        $name:ident {
            $($(#[$vmeta:meta])* $variant:ident => $code:literal, $label:literal;)+
        }
    ) => {
        $crate::vocabulary::vocabulary!(@enum [$($doc)*] $name {
            $($(#[$vmeta])* $variant => $code, $label;)+
        });

        impl $name {
            /// The value of a code, exactly as stored.
            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.code() == raw)
            }
        }
    };

    (
        $(#[doc = $doc:literal])*
        $name:ident by words {
            $($(#[$vmeta:meta])* $variant:ident => $code:literal, $label:literal
                $(| $alias:literal)*;)+
        }
    ) => {
        $crate::vocabulary::vocabulary!(@enum [$($doc)*] $name {
            $($(#[$vmeta])* $variant => $code, $label;)+
        });

        impl $name {
            /// Parses the code (in any case), the Chinese word or an accepted alias.
            pub fn parse(raw: &str) -> Option<Self> {
                let raw = raw.trim();
                match raw {
                    $($code | $label $(| $alias)* => Some($name::$variant),)+
                    _ => {
                        let lower = raw.to_ascii_lowercase();
                        Self::ALL.iter().copied().find(|v| v.code() == lower)
                    }
                }
            }
        }
    };

    (@enum [$($doc:literal)*] $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $code:literal, $label:literal;)+
    }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $code)] $variant,)+
        }

        // Written by hand: the derive does not see a `rename` whose value comes from a
        // macro, and would document the variant names instead of the codes.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description($crate::vocabulary::description(&[$($doc),*]))
                    .enum_values(Some(Self::CODES.iter().copied()))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        // On the wire only the codes are read, whatever `parse` accepts.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <String as serde::Deserialize>::deserialize(deserializer)?;
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.code() == raw)
                    .ok_or_else(|| $crate::vocabulary::unknown_code(&raw, Self::CODES))
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            pub const CODES: &'static [&'static str] = &[$($code,)+];

            /// The stored and English code.
            pub fn code(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)+
                }
            }

            /// The Chinese word people read.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

pub(crate) use vocabulary;

/// The schema description of a vocabulary: its doc comment, a line each, as the derive of
/// `utoipa::ToSchema` writes it; `None` when there is none.
pub fn description(doc: &[&str]) -> Option<String> {
    let text = doc
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The refusal of a value that is not one of `codes`: serde's own "unknown variant" (which the
/// HTTP layer words as the field's allowed values), except for the spelling `we_chat` that
/// earlier versions of the API wrote, which is told the one to use instead. A long value is
/// cut: it is quoted back.
pub fn unknown_code<E: serde::de::Error>(raw: &str, codes: &'static [&'static str]) -> E {
    if raw == "we_chat" && codes.contains(&"wechat") {
        return E::custom("取值 we_chat 已停用，请写作 wechat");
    }
    let raw: String = raw.chars().take(40).collect();
    E::unknown_variant(&raw, codes)
}

// The language a resident's messages are written in: the registry stores it, and the
// message templates, below the registry, choose by it.
vocabulary!(
    /// Preferred language for messages.
    Language by words {
        Zh => "zh", "汉语" | "中文" | "汉" | "zh-CN";
        Ug => "ug", "维吾尔语" | "维语" | "维吾尔";
        Kk => "kk", "哈萨克语" | "哈语" | "哈萨克";
    }
);

#[cfg(test)]
mod tests {
    vocabulary!(
        /// A test vocabulary.
        Channel {
            Sms => "sms", "短信";
            WeChat => "wechat", "微信";
        }
    );

    vocabulary!(
        Language by words {
            Zh => "zh", "汉语" | "中文";
            Kk => "kk", "哈萨克语";
        }
    );

    #[test]
    fn codes_labels_and_parsing() {
        assert_eq!(Channel::WeChat.code(), "wechat");
        assert_eq!(Channel::WeChat.label(), "微信");
        assert_eq!(Channel::parse("wechat"), Some(Channel::WeChat));
        assert_eq!(Channel::parse("微信"), None, "codes only");
        assert_eq!(Channel::parse(" WECHAT"), None, "codes only");
        assert_eq!(Language::parse(" 中文 "), Some(Language::Zh));
        assert_eq!(Language::parse("哈萨克语"), Some(Language::Kk));
        assert_eq!(Language::parse("KK"), Some(Language::Kk));
        assert_eq!(Language::Kk.label(), "哈萨克语");
        assert_eq!(Language::parse("fr"), None);
        assert_eq!(Language::CODES, &["zh", "kk"]);
    }

    #[test]
    fn only_codes_go_over_the_wire() {
        assert_eq!(
            serde_json::to_string(&Channel::WeChat).unwrap(),
            "\"wechat\""
        );
        assert_eq!(
            serde_json::from_str::<Language>("\"kk\"").unwrap(),
            Language::Kk
        );
        let words = serde_json::from_str::<Language>("\"哈萨克语\"").unwrap_err();
        assert!(words.to_string().starts_with("unknown variant"), "{words}");
        let old = serde_json::from_str::<Channel>("\"we_chat\"").unwrap_err();
        assert!(old.to_string().contains("请写作 wechat"), "{old}");
        let long = serde_json::from_str::<Channel>(&format!("\"{}\"", "x".repeat(100)))
            .unwrap_err()
            .to_string();
        assert!(!long.contains(&"x".repeat(41)), "{long}");
    }

    #[test]
    fn the_schema_lists_the_codes_and_the_doc() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(Channel::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(["sms", "wechat"]));
        assert_eq!(schema["description"], "A test vocabulary.");
        let schema = serde_json::to_value(Language::schema()).unwrap();
        assert!(schema.get("description").is_none());
    }
}
