//! The demo county's synthetic population: the area tree of 新源县 and a registry file of
//! residents with valid ID numbers, names of the county's peoples, phones, relatives,
//! migrants and special situations. Everything follows from one seeded generator.

use std::collections::HashSet;
use std::fmt::Write as _;

use chrono::{Duration, NaiveDate};
use rand::Rng;
use rand::rngs::StdRng;

pub const COUNTY_CODE: &str = "654025000000";
pub const COUNTY_NAME: &str = "新源县";

/// A township (乡/镇/场) and its villages and communities.
pub struct Township {
    pub code: &'static str,
    pub name: &'static str,
    /// The township health centre's short name (its institution code is derived from it).
    pub centre: &'static str,
    /// Relative size of its population.
    pub weight: u32,
    pub villages: &'static [&'static str],
}

/// The townships of 新源县 as the county's own documents name them. 新源镇 and 则克台镇
/// carry their statistical codes; the others are numbered in the same pattern (towns 1xx,
/// townships 2xx, farms 4xx). Village and community names are those of the county where
/// known and otherwise names of the kind its villages bear; their codes are numbered under
/// the township (communities 0xx, villages 2xx).
pub const TOWNSHIPS: &[Township] = &[
    Township {
        code: "654025100000",
        name: "新源镇",
        centre: "xinyuan",
        weight: 22,
        villages: &[
            "团结路社区",
            "解放路社区",
            "幸福路社区",
            "巩乃斯路社区",
            "阿勒玛勒村",
            "托格拉克村",
            "喀拉布拉克村",
        ],
    },
    Township {
        code: "654025101000",
        name: "则克台镇",
        centre: "zeketai",
        weight: 12,
        villages: &[
            "则克台社区",
            "克孜勒塔斯村",
            "阿克托别村",
            "加尔布拉克村",
            "铁木尔勒克村",
            "阿克其村",
        ],
    },
    Township {
        code: "654025102000",
        name: "阿热勒托别镇",
        centre: "arletuobie",
        weight: 9,
        villages: &[
            "阿热勒托别村",
            "阿克塔斯村",
            "喀拉苏村",
            "别斯铁热克村",
            "恰布河村",
        ],
    },
    Township {
        code: "654025103000",
        name: "塔勒德镇",
        centre: "taled",
        weight: 8,
        villages: &[
            "塔勒德村",
            "阿拉善村",
            "喀拉托别村",
            "吐尔根布拉克村",
            "萨热阔布村",
        ],
    },
    Township {
        code: "654025104000",
        name: "那拉提镇",
        centre: "nalati",
        weight: 9,
        villages: &[
            "那拉提社区",
            "阿尔善村",
            "塔亚苏村",
            "巴甫村",
            "阿克加尔村",
            "交吾托别村",
        ],
    },
    Township {
        code: "654025105000",
        name: "喀拉布拉镇",
        centre: "kalabula",
        weight: 9,
        villages: &[
            "喀拉布拉村",
            "阿吾赞村",
            "克孜勒加尔村",
            "阿克奇村",
            "哈萨克布拉克村",
        ],
    },
    Township {
        code: "654025106000",
        name: "阿勒玛勒镇",
        centre: "alemale",
        weight: 7,
        villages: &["阿勒玛勒村", "阿克布拉克村", "科克苏村", "别斯托别村"],
    },
    Township {
        code: "654025107000",
        name: "肖尔布拉克镇",
        centre: "xiaoerbulake",
        weight: 6,
        villages: &["肖尔布拉克村", "阿克吐别克村", "萨尔阔布村", "喀拉奥依村"],
    },
    Township {
        code: "654025200000",
        name: "坎苏乡",
        centre: "kansu",
        weight: 5,
        villages: &["坎苏村", "阿克塔木村", "乌拉斯台村", "克特明村"],
    },
    Township {
        code: "654025201000",
        name: "别斯托别乡",
        centre: "biesituobie",
        weight: 6,
        villages: &["别斯托别村", "阿克其拉克村", "喀拉峻村", "加勒格孜阿尕什村"],
    },
    Township {
        code: "654025202000",
        name: "吐尔根乡",
        centre: "tuergen",
        weight: 5,
        villages: &["吐尔根村", "阿克阔拉村", "卡拉托别村", "恰勒格尔村"],
    },
    Township {
        code: "654025400000",
        name: "新源马场",
        centre: "machang",
        weight: 2,
        villages: &["马场一队", "马场二队", "马场三队"],
    },
];

/// The 12-digit code of village `index` of `township`: communities (社区) 001…, villages
/// from 201.
pub fn village_code(township: &Township, index: usize) -> String {
    let name = township.villages[index];
    let prefix = &township.code[..9];
    let communities = township
        .villages
        .iter()
        .take(index)
        .filter(|v| v.ends_with("社区"))
        .count();
    if name.ends_with("社区") {
        format!("{prefix}{:03}", communities + 1)
    } else {
        format!("{prefix}{:03}", 201 + index - communities)
    }
}

/// The area list as `outreach import areas` reads it.
pub fn areas_csv() -> String {
    let mut out = String::from("区划代码,名称\n");
    let _ = writeln!(out, "{COUNTY_CODE},{COUNTY_NAME}");
    for township in TOWNSHIPS {
        let _ = writeln!(out, "{},{}", township.code, township.name);
        for (i, village) in township.villages.iter().enumerate() {
            let _ = writeln!(out, "{},{village}", village_code(township, i));
        }
    }
    out
}

/// One synthetic resident, as far as the demo's later steps need to know them.
#[derive(Debug, Clone)]
pub struct Person {
    pub id_number: String,
    pub village_code: String,
    pub township: usize,
    pub birth: NaiveDate,
    pub has_phone: bool,
    /// Their own mobile number, when they have one.
    pub phone: Option<String>,
    pub migrant: Option<&'static str>,
    pub special: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum People {
    Han,
    Kazakh,
    Uyghur,
    Hui,
}

const HAN_SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林",
    "何", "郭", "罗", "郑", "梁", "谢", "宋", "唐", "韩", "冯", "于", "董", "程", "曹",
];
const HUI_SURNAMES: &[&str] = &["马", "杨", "白", "丁", "海", "穆", "哈", "冶", "纳", "米"];
const HAN_GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "霞", "平", "刚", "桂英", "建华", "文", "华", "玉兰", "志强", "海燕", "建国",
    "红", "晓东", "婷", "鹏", "宇", "欣怡", "子涵", "浩然", "梓萱", "一诺", "俊杰",
];
const KAZAKH_GIVEN: &[&str] = &[
    "努尔兰",
    "叶尔兰",
    "阿依古丽",
    "古丽娜尔",
    "哈力木",
    "别克",
    "叶尔江",
    "阿斯哈尔",
    "玛依拉",
    "胡安",
    "加娜尔",
    "阿勒泰",
    "努尔江",
    "巴合提",
    "阿曼",
    "赛力克",
    "达娜",
    "阿依达娜",
    "叶尔波拉提",
    "库兰",
    "沙吾列",
    "阿扎提",
    "木拉提",
    "哈那提",
    "叶勒扎提",
    "阿依登",
    "加尔肯",
    "托合塔尔",
    "哈斯木",
    "居马别克",
];
const UYGHUR_GIVEN: &[&str] = &[
    "买买提",
    "艾力",
    "阿不都",
    "热依拉",
    "古丽",
    "吐尔逊",
    "阿依努尔",
    "艾合买提",
    "帕提古丽",
    "麦尔丹",
    "努尔麦麦提",
    "阿迪力",
    "米日古丽",
    "热合曼",
    "祖丽皮亚",
    "依明",
    "阿曼古丽",
    "卡德尔",
    "吾斯曼",
    "努尔古丽",
];

const MIGRANT_PLACES: &[&str] = &[
    "乌鲁木齐市天山区",
    "乌鲁木齐市新市区",
    "伊宁市解放路",
    "奎屯市北京路",
    "克拉玛依市独山子区",
    "昌吉市延安北路",
    "上海市浦东新区",
    "广州市白云区",
    "西安市雁塔区",
    "北京市海淀区",
];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// An age drawn from the county's age pyramid: many children and young adults, fewer old.
fn age(rng: &mut StdRng) -> u32 {
    // Share (per mille) of each five-year band from 0–4 up to 85–89, then 90–99.
    const BANDS: [u32; 19] = [
        70, 72, 70, 62, 60, 72, 80, 78, 74, 70, 66, 60, 52, 40, 30, 22, 14, 8, 4,
    ];
    let total: u32 = BANDS.iter().sum();
    let mut draw = rng.random_range(0..total);
    for (band, share) in BANDS.iter().enumerate() {
        if draw < *share {
            let width = if band == 18 { 10 } else { 5 };
            return band as u32 * 5 + rng.random_range(0..width);
        }
        draw -= share;
    }
    30
}

/// A mobile number in the ranges carriers give in Xinjiang.
fn phone(rng: &mut StdRng, used: &mut HashSet<u64>) -> String {
    const PREFIXES: [u64; 8] = [135, 138, 139, 150, 152, 158, 181, 199];
    loop {
        let prefix = PREFIXES[rng.random_range(0..PREFIXES.len())];
        let number = prefix * 100_000_000 + rng.random_range(0..100_000_000u64);
        if used.insert(number) {
            return number.to_string();
        }
    }
}

/// The ISO 7064 MOD 11-2 check character of the first 17 digits (GB 11643).
fn check_char(first17: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize]
}

fn name(rng: &mut StdRng, people: People, male: bool) -> String {
    match people {
        People::Han | People::Hui => {
            let surnames = if people == People::Hui {
                HUI_SURNAMES
            } else {
                HAN_SURNAMES
            };
            let mut name = pick(rng, surnames).to_owned();
            name.push_str(pick(rng, HAN_GIVEN));
            if name.chars().count() == 2 && rng.random_bool(0.4) {
                name.push_str(pick(rng, HAN_GIVEN));
            }
            name
        }
        People::Kazakh => format!("{}·{}", pick(rng, KAZAKH_GIVEN), pick(rng, KAZAKH_GIVEN)),
        People::Uyghur => {
            let _ = male;
            format!("{}·{}", pick(rng, UYGHUR_GIVEN), pick(rng, UYGHUR_GIVEN))
        }
    }
}

/// `count` residents as a registry CSV (English headers), with what the demo needs to know
/// of each. `today` fixes the ages.
pub fn residents(rng: &mut StdRng, count: usize, today: NaiveDate) -> (String, Vec<Person>) {
    let mut csv = String::from(
        "name,id_number,village_code,phone,relative_name,relative_phone,migrant_type,\
         current_address,permit_since,special,language\n",
    );
    let weights: u32 = TOWNSHIPS.iter().map(|t| t.weight).sum();
    let mut ids: HashSet<String> = HashSet::with_capacity(count);
    let mut phones: HashSet<u64> = HashSet::with_capacity(count * 2);
    let mut people = Vec::with_capacity(count);
    while people.len() < count {
        let mut draw = rng.random_range(0..weights);
        let township = TOWNSHIPS
            .iter()
            .position(|t| {
                if draw < t.weight {
                    true
                } else {
                    draw -= t.weight;
                    false
                }
            })
            .unwrap_or(0);
        let t = &TOWNSHIPS[township];
        let village = village_code(t, rng.random_range(0..t.villages.len()));
        let town = village[9..].starts_with('0');

        let ethnic = rng.random_range(0..100);
        let folk = match (town, ethnic) {
            (true, 0..45) | (false, 0..25) => People::Han,
            (true, 45..85) | (false, 25..85) => People::Kazakh,
            (_, 85..95) => People::Uyghur,
            _ => People::Hui,
        };
        let age = age(rng);
        let male = rng.random_bool(0.5);
        // Some day of the year that followed the `age`-th birthday.
        let birth =
            today - Duration::days(i64::from(age) * 36_525 / 100 + rng.random_range(1..365));
        let sequence = loop {
            // The 17th digit is odd for men, even for women.
            let base = rng.random_range(0..500u32) * 2;
            let seq = if male { base + 1 } else { base };
            let first17 = format!("654025{}{:03}", birth.format("%Y%m%d"), seq % 1000);
            let id = format!("{first17}{}", check_char(&first17));
            if ids.insert(id.clone()) {
                break id;
            }
        };
        let adult = (18..=60).contains(&age);
        let has_phone = if adult {
            rng.random_bool(0.9)
        } else if age >= 61 {
            rng.random_bool(0.55)
        } else {
            false
        };
        let own_phone = has_phone.then(|| phone(rng, &mut phones));
        let needs_relative = !has_phone || age >= 65;
        let relative = (needs_relative && rng.random_bool(0.85)).then(|| {
            let male = rng.random_bool(0.5);
            (name(rng, folk, male), phone(rng, &mut phones))
        });
        let migrant = if (16..=55).contains(&age) && rng.random_bool(0.16) {
            Some(match rng.random_range(0..100) {
                0..35 => "in_region_permit",
                35..60 => "in_region_no_permit",
                60..78 => "out_of_region",
                78..94 => "student_away",
                _ => "official_away",
            })
        } else {
            None
        };
        let special = match rng.random_range(0..1000) {
            _ if migrant.is_some() => None,
            0..3 => Some("deceased"),
            3..5 => Some("moved_out"),
            5..8 => Some("detained"),
            8..12 => Some("hospitalized"),
            12..40 if folk == People::Kazakh && !town => Some("remote_pastoral"),
            40..70 if age >= 70 => Some("mobility"),
            _ => None,
        };
        let language = match folk {
            People::Kazakh if rng.random_bool(0.55) => "kk",
            People::Uyghur if rng.random_bool(0.55) => "ug",
            _ => "zh",
        };
        let (address, permit_since) = match migrant {
            Some(kind) => {
                let address = pick(rng, MIGRANT_PLACES).to_owned();
                let since = (kind == "in_region_permit").then(|| {
                    (today - Duration::days(rng.random_range(90..1500)))
                        .format("%Y-%m-%d")
                        .to_string()
                });
                (address, since.unwrap_or_default())
            }
            None => (String::new(), String::new()),
        };
        let (relative_name, relative_phone) = relative.unwrap_or_default();
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{}",
            name(rng, folk, male),
            sequence,
            village,
            own_phone.as_deref().unwrap_or(""),
            relative_name,
            relative_phone,
            migrant.unwrap_or("local"),
            address,
            permit_since,
            special.unwrap_or(""),
            language,
        );
        people.push(Person {
            id_number: sequence,
            village_code: village,
            township,
            birth,
            has_phone,
            phone: own_phone,
            migrant,
            special,
        });
    }
    (csv, people)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::registry::ResidentId;

    #[test]
    fn the_area_list_names_every_village_once_under_its_township() {
        let csv = areas_csv();
        let codes: Vec<&str> = csv.lines().skip(1).map(|l| &l[..12]).collect();
        let unique: HashSet<&str> = codes.iter().copied().collect();
        assert_eq!(codes.len(), unique.len());
        assert_eq!(village_code(&TOWNSHIPS[0], 0), "654025100001");
        assert_eq!(village_code(&TOWNSHIPS[0], 4), "654025100201");
    }

    #[test]
    fn residents_have_valid_unique_ids_and_follow_the_seed() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let (csv, people) = residents(&mut StdRng::seed_from_u64(7), 3000, today);
        let (again, _) = residents(&mut StdRng::seed_from_u64(7), 3000, today);
        assert_eq!(csv, again);
        for person in &people {
            assert!(
                ResidentId::parse(&person.id_number, today).is_ok(),
                "{}",
                person.id_number
            );
        }
        let migrants = people.iter().filter(|p| p.migrant.is_some()).count();
        assert!((150..=600).contains(&migrants), "{migrants} migrants");
        assert!(people.iter().any(|p| p.special == Some("deceased")));
        assert!(csv.contains('·'));
    }
}
