use sea_orm::entity::prelude::*;

/// One resident of the household-registration population (户籍人口), one row per ID number
/// county-wide. ID and phone numbers are stored encrypted, with a keyed blind index for exact
/// lookup and a masked form for display.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "residents")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    /// HMAC-SHA256 of the normalised ID number; unique.
    #[sea_orm(column_type = "Blob", unique)]
    pub id_index: Vec<u8>,
    #[sea_orm(column_type = "Blob")]
    pub id_cipher: Vec<u8>,
    pub id_masked: String,
    pub name: String,
    /// `M` or `F`, from the ID number.
    pub sex: String,
    pub birth_date: Date,
    /// Household village (户籍地), 12-digit code.
    pub village_code: String,
    /// zh, ug or kk.
    pub language: String,
    pub migrant_type: String,
    pub permit_since: Option<Date>,
    pub special: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub current_address: Option<String>,
    #[sea_orm(column_type = "Blob", nullable)]
    pub phone_cipher: Option<Vec<u8>>,
    #[sea_orm(column_type = "Blob", nullable)]
    pub phone_index: Option<Vec<u8>>,
    pub phone_masked: Option<String>,
    pub phone_opt_out: bool,
    pub relative_name: Option<String>,
    pub relative_relation: Option<String>,
    #[sea_orm(column_type = "Blob", nullable)]
    pub relative_phone_cipher: Option<Vec<u8>>,
    #[sea_orm(column_type = "Blob", nullable)]
    pub relative_phone_index: Option<Vec<u8>>,
    pub relative_phone_masked: Option<String>,
    pub relative_opt_out: bool,
    pub wechat_openid: Option<String>,
    pub wechat_opt_out: bool,
    pub email: Option<String>,
    pub email_opt_out: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::areas::Entity",
        from = "Column::VillageCode",
        to = "super::areas::Column::Code"
    )]
    Village,
}

impl Related<super::areas::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Village.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
