//! Small builders shared by the migrations, so every table, foreign key and
//! index is declared the same way and gets a predictable name.
//!
//! Everything here is portable between SQLite and PostgreSQL:
//! * foreign keys are declared inside `CREATE TABLE` (SQLite cannot add them
//!   later with `ALTER TABLE`);
//! * indexes are separate `CREATE INDEX` statements (index names are global
//!   per schema on both backends, hence the `idx_<table>_<cols>` naming).

use sea_orm_migration::prelude::*;

/// Start a `CREATE TABLE` statement.
pub fn table(name: &'static str) -> TableCreateStatement {
    Table::create().table(name).take()
}

/// A foreign key `from_tbl.from_col -> to_tbl.id`, named `fk_<from_tbl>_<from_col>`.
pub fn fk(
    from_tbl: &'static str,
    from_col: &'static str,
    to_tbl: &'static str,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    fk_to(from_tbl, from_col, to_tbl, "id", on_delete)
}

/// Like [`fk`] but referencing a column other than `id`.
pub fn fk_to(
    from_tbl: &'static str,
    from_col: &'static str,
    to_tbl: &'static str,
    to_col: &'static str,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{from_tbl}_{from_col}"))
        .from_tbl(from_tbl)
        .from_col(from_col)
        .to_tbl(to_tbl)
        .to_col(to_col)
        .on_delete(on_delete)
        .take()
}

/// Composite primary key over `cols`.
pub fn pk(cols: &[&'static str]) -> IndexCreateStatement {
    let mut idx = Index::create();
    for c in cols {
        idx.col(*c);
    }
    idx.take()
}

fn index_stmt(prefix: &str, tbl: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(format!("{prefix}_{tbl}_{}", cols.join("_"))).table(tbl);
    for c in cols {
        idx.col(*c);
    }
    idx.take()
}

/// Plain index named `idx_<table>_<cols>`.
pub fn index(tbl: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    index_stmt("idx", tbl, cols)
}

/// Unique index named `uq_<table>_<cols>`.
pub fn unique(tbl: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    index_stmt("uq", tbl, cols).unique().take()
}

/// Create the tables (in order), then the indexes.
pub async fn create_all(
    manager: &SchemaManager<'_>,
    tables: Vec<TableCreateStatement>,
    indexes: Vec<IndexCreateStatement>,
) -> Result<(), DbErr> {
    for t in tables {
        manager.create_table(t).await?;
    }
    for i in indexes {
        manager.create_index(i).await?;
    }
    Ok(())
}

/// Drop the tables in the order given (children before parents); their
/// indexes go with them on both backends.
pub async fn drop_all(manager: &SchemaManager<'_>, tables: &[&'static str]) -> Result<(), DbErr> {
    for t in tables {
        manager.drop_table(Table::drop().table(*t).to_owned()).await?;
    }
    Ok(())
}
