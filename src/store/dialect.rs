//! What differs between the two databases the store runs on, in one place.
//!
//! The store keeps one definition of each query wherever the dialects allow: queries are
//! written with SQLite's placeholders (`?` and `?N`), and [`Dialect::sql`] rewrites them as
//! PostgreSQL's (`$N`). Values are passed as [`Param`]s and bound by [`Db`], the backend enum,
//! which is the only place that picks a driver. What cannot be shared (the writer's
//! transaction, migrations, the wake-up of live tails) lives in `pg.rs` beside the SQLite code.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use sqlx::{PgPool, SqlitePool};

/// Where a store lives, as `--db`, `HEALSTORE_DB` or [`crate::Store::open`] name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An SQLite file (a path, or an `sqlite:` URL): the embedded default.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://` or `postgresql://` URL).
    Postgres(String),
}

impl Target {
    /// Reads a `--db` value: a `postgres://` or `postgresql://` URL selects PostgreSQL;
    /// `sqlite://PATH`, `sqlite:PATH` and any other text name an SQLite file.
    pub fn parse(db: &Path) -> Target {
        let Some(text) = db.to_str() else {
            return Target::Sqlite(db.to_path_buf());
        };
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Target::Postgres(text.to_owned());
        }
        match text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            // (options in the query string are not taken: the store sets its own)
            Some(rest) => Target::Sqlite(PathBuf::from(rest.split('?').next().unwrap_or(rest))),
            None => Target::Sqlite(db.to_path_buf()),
        }
    }
}

/// A PostgreSQL URL as messages show it: without its password.
pub(crate) fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) if user.contains(':') => {
                let name = user.split(':').next().unwrap_or("");
                format!("{scheme}://{name}:***@{host}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The SQL dialect of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A list bound as [`Param::Texts`] at placeholder `n`, as a table `alias` of one column,
    /// `value`.
    pub fn text_list(self, n: usize, alias: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_each(?{n}) AS {alias}"),
            Dialect::Postgres => format!("UNNEST(CAST(?{n} AS TEXT[])) AS {alias}(value)"),
        }
    }

    /// `sql` as this dialect writes it: `?N` becomes `$N`, and a bare `?` the next number, for
    /// PostgreSQL. (The store's queries hold no `?` inside string literals.)
    pub fn sql(self, sql: &str) -> Cow<'_, str> {
        if self == Dialect::Sqlite || !sql.contains('?') {
            return Cow::Borrowed(sql);
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut next = 0;
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '?' {
                out.push(c);
                continue;
            }
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            out.push('$');
            if digits.is_empty() {
                next += 1;
                out.push_str(&next.to_string());
            } else {
                out.push_str(&digits);
            }
        }
        Cow::Owned(out)
    }
}

/// A value bound to a shared query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
    /// Text or NULL.
    OptText(Option<String>),
    /// A list of texts, read by the query as the table [`Dialect::text_list`] names: bound as
    /// a JSON array on SQLite (`json_each`), as a `text[]` on PostgreSQL (`UNNEST`).
    Texts(Vec<String>),
}

impl From<i64> for Param {
    fn from(v: i64) -> Param {
        Param::Int(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Param {
        Param::Text(v.to_owned())
    }
}

impl From<&String> for Param {
    fn from(v: &String) -> Param {
        Param::Text(v.clone())
    }
}

impl From<String> for Param {
    fn from(v: String) -> Param {
        Param::Text(v)
    }
}

impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Param {
        Param::OptText(v.map(str::to_owned))
    }
}

/// Binds `params` in order to a sqlx query of either driver; `$list` turns a
/// [`Param::Texts`] into the value that driver binds.
macro_rules! bind_params {
    ($query:expr, $params:expr, $list:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                $crate::store::dialect::Param::Int(i) => q.bind(*i),
                $crate::store::dialect::Param::Text(s) => q.bind(s.clone()),
                $crate::store::dialect::Param::OptText(s) => q.bind(s.clone()),
                $crate::store::dialect::Param::Texts(v) => q.bind($list(v)),
            };
        }
        q
    }};
}

/// A list as SQLite's `json_each` reads it.
fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

/// A list as PostgreSQL binds a `text[]`.
fn pg_list(v: &[String]) -> Vec<String> {
    v.to_vec()
}

/// Rows decoded alike from either backend (tuples of `i64`, `String`, `bool`, `Option`s...).
pub(crate) trait AnyRow:
    for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
    + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
    + Send
    + Unpin
{
}

impl<T> AnyRow for T where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin
{
}

/// The store's read connections: the backend enum.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// One optional 64-bit integer (the first column of the first row; `None` for no row or
    /// NULL).
    pub async fn int(&self, sql: &str, params: &[Param]) -> sqlx::Result<Option<i64>> {
        let sql = self.dialect().sql(sql).into_owned();
        match self {
            Db::Sqlite(pool) => {
                let q = bind_params!(
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)),
                    params,
                    json_list
                );
                Ok(q.fetch_optional(pool).await?.flatten())
            }
            Db::Postgres(pool) => {
                let q = bind_params!(
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)),
                    params,
                    pg_list
                );
                Ok(q.fetch_optional(pool).await?.flatten())
            }
        }
    }

    /// Two 64-bit integers from one row.
    pub async fn two_ints(&self, sql: &str, params: &[Param]) -> sqlx::Result<(i64, i64)> {
        let sql = self.dialect().sql(sql).into_owned();
        match self {
            Db::Sqlite(pool) => {
                let q = bind_params!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params, json_list);
                q.fetch_one(pool).await
            }
            Db::Postgres(pool) => {
                let q = bind_params!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params, pg_list);
                q.fetch_one(pool).await
            }
        }
    }

    /// Events by a query that selects [`super::read::EVENT_COLUMNS`].
    pub async fn events(
        &self,
        sql: &str,
        params: &[Param],
        path: &Path,
    ) -> crate::Result<Vec<crate::event::RecordedEvent>> {
        let sql = self.dialect().sql(sql).into_owned();
        let db = |e| crate::Error::from_db(e, path);
        match self {
            Db::Sqlite(pool) => {
                let q = bind_params!(sqlx::query(sqlx::AssertSqlSafe(sql)), params, json_list);
                q.fetch_all(pool)
                    .await
                    .map_err(db)?
                    .iter()
                    .map(super::read::decode_row)
                    .collect()
            }
            Db::Postgres(pool) => {
                let q = bind_params!(sqlx::query(sqlx::AssertSqlSafe(sql)), params, pg_list);
                q.fetch_all(pool)
                    .await
                    .map_err(db)?
                    .iter()
                    .map(super::read::decode_row)
                    .collect()
            }
        }
    }

    /// Every row of a query, decoded alike from either backend.
    pub async fn fetch_all<T: AnyRow>(&self, sql: &str, params: &[Param]) -> sqlx::Result<Vec<T>> {
        let sql = self.dialect().sql(sql).into_owned();
        match self {
            Db::Sqlite(pool) => {
                let q = bind_params!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params, json_list);
                q.fetch_all(pool).await
            }
            Db::Postgres(pool) => {
                let q = bind_params!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params, pg_list);
                q.fetch_all(pool).await
            }
        }
    }

    /// The first row of a query, if any.
    pub async fn fetch_optional<T: AnyRow>(
        &self,
        sql: &str,
        params: &[Param],
    ) -> sqlx::Result<Option<T>> {
        let sql = self.dialect().sql(sql).into_owned();
        match self {
            Db::Sqlite(pool) => {
                let q = bind_params!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params, json_list);
                q.fetch_optional(pool).await
            }
            Db::Postgres(pool) => {
                let q = bind_params!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params, pg_list);
                q.fetch_optional(pool).await
            }
        }
    }

    /// The one row of a query (an error when there is none).
    pub async fn fetch_one<T: AnyRow>(&self, sql: &str, params: &[Param]) -> sqlx::Result<T> {
        self.fetch_optional(sql, params)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// The error for what the PostgreSQL backend does not do yet.
pub(crate) fn not_yet(what: &str) -> crate::Error {
    crate::Error::InvalidInput(format!("not yet available on PostgreSQL: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_for_postgres_only() {
        let q = "SELECT a FROM t WHERE x = ?1 AND y = ?1 AND w = ?12";
        assert_eq!(Dialect::Sqlite.sql(q), q);
        assert_eq!(
            Dialect::Postgres.sql(q),
            "SELECT a FROM t WHERE x = $1 AND y = $1 AND w = $12"
        );
        assert_eq!(
            Dialect::Postgres.sql("z IN (?, ?) LIMIT ?"),
            "z IN ($1, $2) LIMIT $3"
        );
    }

    #[test]
    fn targets() {
        let t = |s: &str| Target::parse(Path::new(s));
        assert_eq!(t("a.db"), Target::Sqlite("a.db".into()));
        assert_eq!(t("sqlite:a.db"), Target::Sqlite("a.db".into()));
        assert_eq!(t("sqlite:///x/a.db"), Target::Sqlite("/x/a.db".into()));
        assert_eq!(
            t("postgres://u@h/d"),
            Target::Postgres("postgres://u@h/d".into())
        );
        assert_eq!(
            t("postgresql://u@h/d"),
            Target::Postgres("postgresql://u@h/d".into())
        );
        assert_eq!(shown_url("postgres://u:secret@h/d"), "postgres://u:***@h/d");
    }
}
