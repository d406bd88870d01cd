use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .if_not_exists()
                    .col(pk_auto(AuditLog::Id))
                    .col(timestamp_with_time_zone(AuditLog::At))
                    .col(integer_null(AuditLog::ActorUserId))
                    .col(string_len(AuditLog::ActorName, 64))
                    .col(string_len(AuditLog::ActorRole, 16))
                    .col(string_len(AuditLog::Action, 64))
                    .col(string_len(AuditLog::Entity, 64))
                    .col(string_len_null(AuditLog::EntityId, 64))
                    .col(char_len_null(AuditLog::AreaCode, 12))
                    .col(string_len_null(AuditLog::RequestId, 64))
                    .col(text(AuditLog::Summary))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("idx_audit_log_at", vec![AuditLog::At]),
            (
                "idx_audit_log_entity",
                vec![AuditLog::Entity, AuditLog::EntityId],
            ),
            ("idx_audit_log_area_code", vec![AuditLog::AreaCode]),
            ("idx_audit_log_actor", vec![AuditLog::ActorUserId]),
        ] {
            let mut index = Index::create();
            index.name(name).table(AuditLog::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }

        // Append-only is enforced by the database itself, not only by the code that writes it.
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
                     BEGIN RAISE EXCEPTION 'audit_log is append-only'; END;
                     $$ LANGUAGE plpgsql;
                     CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
                     FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
                     CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
                     FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();",
                )
                .await?;
            }
            _ => {
                db.execute_unprepared(
                    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
                     BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
                     BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;",
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditLog::Table).to_owned())
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS audit_log_append_only()")
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    ActorUserId,
    ActorName,
    ActorRole,
    Action,
    Entity,
    EntityId,
    AreaCode,
    RequestId,
    Summary,
}
