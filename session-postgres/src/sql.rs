//! The SQL: identifier validation, the statements (templated once per store
//! with its validated schema and table) and the embedded migrations.

use std::sync::Arc;

use crate::error::{Error, IdentifierKind, IdentifierProblem};

/// The longest schema or table name accepted, in bytes.
///
/// Postgres allows 63; the index names derived from the table name
/// (`<table>_expires_at_idx`, `<table>_principal_idx`) need the rest.
pub const MAX_IDENTIFIER_LEN: usize = 48;

/// Checks a schema or table name against the rules in
/// [`PostgresStoreBuilder`](crate::PostgresStoreBuilder).
///
/// Only lowercase names are accepted so that the quoted name the store uses
/// and the unquoted name a person types in `psql` are the same table.
pub(crate) fn validate(kind: IdentifierKind, name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        Some(IdentifierProblem::Empty)
    } else if name.len() > MAX_IDENTIFIER_LEN {
        Some(IdentifierProblem::TooLong)
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        Some(IdentifierProblem::InvalidCharacter(c))
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        Some(IdentifierProblem::LeadingDigit)
    } else if kind == IdentifierKind::Schema && name.starts_with("pg_") {
        Some(IdentifierProblem::Reserved)
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::InvalidIdentifier {
            kind,
            name: name.to_owned(),
            problem,
        }),
    }
}

/// The record format the typed columns hold (the `format` column). It
/// matches session-core's encoding format tag, field for field.
pub(crate) const FORMAT: i16 = 1;

/// An app-clock instant travels as Unix milliseconds (`int8`) and is kept as
/// `timestamptz`. `to_timestamp` is exact to well under a millisecond up to
/// year 9999, and reading back rounds, so a record round-trips exactly.
fn ts(param: &str) -> String {
    format!("to_timestamp({param}::float8 / 1000)")
}

/// The inverse of [`ts`]: a `timestamptz` column as Unix milliseconds.
fn ms(column: &str) -> String {
    format!("round(extract(epoch FROM {column}) * 1000)::int8")
}

/// The columns of a record, in the order `decode_row` reads them.
fn record_columns() -> String {
    format!(
        "format, version, data::text AS data, principal, \
         {} AS created_at, {} AS last_access, {} AS idle_deadline, \
         {} AS absolute_deadline, idle_timeout_ms, persistent",
        ms("created_at"),
        ms("last_access"),
        ms("idle_deadline"),
        ms("absolute_deadline"),
    )
}

/// Every statement the store runs, built once per store. Shared strings, so
/// that cloning a store or binding a query copies no SQL (and sqlx's
/// per-connection statement cache, keyed by the text, prepares each once).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) schema: String,
    pub(crate) table: String,
    /// `"schema"."table"`, for error messages and statements.
    pub(crate) qualified: String,
    pub(crate) create: Arc<str>,
    pub(crate) load: Arc<str>,
    pub(crate) save: Arc<str>,
    pub(crate) touch: Arc<str>,
    pub(crate) delete: Arc<str>,
    pub(crate) list_by_principal: Arc<str>,
    pub(crate) delete_by_principal: Arc<str>,
    pub(crate) delete_expired_batch: Arc<str>,
}

impl Statements {
    /// The statements for `schema`.`table`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`] when either name breaks the rules: only
    /// validated names are ever spliced into SQL.
    pub(crate) fn new(schema: &str, table: &str) -> Result<Self, Error> {
        validate(IdentifierKind::Schema, schema)?;
        validate(IdentifierKind::Table, table)?;
        Ok(Self::unchecked(schema, table))
    }

    /// The statements for names known to be valid.
    pub(crate) fn unchecked(schema: &str, table: &str) -> Self {
        let t = format!("\"{schema}\".\"{table}\"");
        let columns = record_columns();
        // Liveness is decided by the database clock alone: `expires_at` is
        // `now()` plus a duration the app computed, and every check compares
        // it with `now()`. App-clock instants are stored, never compared.
        let create = format!(
            "INSERT INTO {t} AS s (key, format, version, data, principal, created_at, \
                last_access, idle_deadline, absolute_deadline, idle_timeout_ms, persistent, \
                expires_at) \
             VALUES ($1, {FORMAT}, $2, $3::json, $4, {c}, {a}, {i}, {x}, $9, $10, \
                now() + $11::int8 * interval '1 millisecond') \
             ON CONFLICT (key) DO UPDATE SET format = excluded.format, \
                version = excluded.version, data = excluded.data, \
                principal = excluded.principal, created_at = excluded.created_at, \
                last_access = excluded.last_access, idle_deadline = excluded.idle_deadline, \
                absolute_deadline = excluded.absolute_deadline, \
                idle_timeout_ms = excluded.idle_timeout_ms, persistent = excluded.persistent, \
                expires_at = excluded.expires_at \
             WHERE s.expires_at <= now()",
            c = ts("$5"),
            a = ts("$6"),
            i = ts("$7"),
            x = ts("$8"),
        );
        let load = format!("SELECT {columns} FROM {t} WHERE key = $1 AND expires_at > now()");
        // One statement, one round trip. The UPDATE skips a row whose version
        // already differs in its snapshot without waiting for its lock, so
        // under many parallel saves only those that can still win queue on
        // the row. When nothing was saved, `seen` (the snapshot) tells Gone
        // from Conflict, except when it still shows the expected version:
        // then a concurrent writer committed after the snapshot, and a
        // locking read (evaluated only in that case) sees what it left.
        let live = "key = $1 AND expires_at > now()";
        let save = format!(
            "WITH saved AS ( \
                UPDATE {t} SET format = {FORMAT}, version = $3, data = $4::json, \
                    principal = $5, created_at = {c}, last_access = {a}, idle_deadline = {i}, \
                    absolute_deadline = {x}, idle_timeout_ms = $10, persistent = $11, \
                    expires_at = now() + $12::int8 * interval '1 millisecond' \
                WHERE {live} AND version = $2 \
                RETURNING 1 \
             ), seen AS ( \
                SELECT version FROM {t} WHERE {live} \
             ) \
             SELECT EXISTS (SELECT 1 FROM saved) AS saved, \
                CASE WHEN EXISTS (SELECT 1 FROM saved) THEN $2 \
                    WHEN (SELECT version FROM seen) IS DISTINCT FROM $2 \
                    THEN (SELECT version FROM seen) \
                    ELSE (SELECT version FROM {t} WHERE {live} FOR SHARE) \
                END AS current_version",
            c = ts("$6"),
            a = ts("$7"),
            i = ts("$8"),
            x = ts("$9"),
        );
        // The idle deadline only ever moves later (a parallel save may have
        // set a longer idle timeout than the toucher saw) and never past the
        // absolute one. The new lifetime is a duration on the app clock (that
        // deadline minus the app's now), added to the database's now().
        let capped = format!(
            "LEAST(GREATEST($3::int8, {}), {})",
            ms("idle_deadline"),
            ms("absolute_deadline")
        );
        let touch = format!(
            "UPDATE {t} SET last_access = {a}, idle_deadline = {i}, \
                expires_at = now() + ({capped} - $2::int8) * interval '1 millisecond' \
             WHERE key = $1 AND expires_at > now()",
            a = ts("$2"),
            i = ts(&capped),
        );
        let delete = format!("DELETE FROM {t} WHERE key = $1");
        let list_by_principal = format!(
            "SELECT key, {columns} FROM {t} \
             WHERE principal = $1 AND expires_at > now() ORDER BY last_access DESC"
        );
        // Expired sessions of the principal go too, but only live ones count.
        let delete_by_principal = format!(
            "WITH gone AS (DELETE FROM {t} WHERE principal = $1 RETURNING expires_at > now() AS live) \
             SELECT count(*) FILTER (WHERE live) FROM gone"
        );
        // SKIP LOCKED: the sweeper never waits behind a request's write. The
        // outer re-check keeps a row that a create revived in the meantime.
        let delete_expired_batch = format!(
            "DELETE FROM {t} WHERE key IN ( \
                SELECT key FROM {t} WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED \
             ) AND expires_at <= now()"
        );
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            qualified: t,
            create: create.into(),
            load: load.into(),
            save: save.into(),
            touch: touch.into(),
            delete: delete.into(),
            list_by_principal: list_by_principal.into(),
            delete_by_principal: delete_by_principal.into(),
            delete_expired_batch: delete_expired_batch.into(),
        }
    }

    /// The table that records which migrations ran, per session table.
    pub(crate) fn migrations_table(&self) -> String {
        format!("\"{}\".\"session_store_migrations\"", self.schema)
    }
}

/// One embedded migration: a version and SQL templated with the table names.
pub(crate) struct Migration {
    pub(crate) version: i32,
    pub(crate) description: &'static str,
    pub(crate) sql: fn(&Statements) -> String,
}

/// Every migration, oldest first. Applied ones are never edited: a change is
/// a new migration.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "create the session table",
    sql: |s| {
        let (t, table) = (&s.qualified, &s.table);
        format!(
            "CREATE TABLE {t} ( \
                key text COLLATE \"C\" PRIMARY KEY, \
                format smallint NOT NULL, \
                version bigint NOT NULL, \
                data json NOT NULL, \
                principal text, \
                created_at timestamptz NOT NULL, \
                last_access timestamptz NOT NULL, \
                idle_deadline timestamptz NOT NULL, \
                absolute_deadline timestamptz NOT NULL, \
                idle_timeout_ms bigint NOT NULL, \
                persistent boolean NOT NULL, \
                expires_at timestamptz NOT NULL \
             ); \
             CREATE INDEX \"{table}_expires_at_idx\" ON {t} (expires_at); \
             CREATE INDEX \"{table}_principal_idx\" ON {t} (principal) \
                WHERE principal IS NOT NULL;"
        )
    },
}];

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: IdentifierKind, name: &str) -> Option<IdentifierProblem> {
        match validate(kind, name) {
            Ok(()) => None,
            Err(Error::InvalidIdentifier {
                kind: k,
                name: n,
                problem,
            }) => {
                assert_eq!((k, n.as_str()), (kind, name));
                Some(problem)
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn good_names_pass() {
        for name in ["sessions", "_x", "auth_2", &"a".repeat(MAX_IDENTIFIER_LEN)] {
            assert_eq!(problem(IdentifierKind::Schema, name), None, "{name}");
            assert_eq!(problem(IdentifierKind::Table, name), None, "{name}");
        }
        assert_eq!(problem(IdentifierKind::Table, "pg_sessions"), None);
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        use IdentifierProblem::*;
        let cases = [
            ("", Empty),
            (&*"a".repeat(MAX_IDENTIFIER_LEN + 1), TooLong),
            ("1abc", LeadingDigit),
            ("Sessions", InvalidCharacter('S')),
            ("a-b", InvalidCharacter('-')),
            ("a\"; DROP TABLE x; --", InvalidCharacter('"')),
            ("a b", InvalidCharacter(' ')),
            ("sessiöns", InvalidCharacter('ö')),
        ];
        for (name, expected) in cases {
            assert_eq!(
                problem(IdentifierKind::Table, name),
                Some(expected),
                "{name:?}"
            );
        }
        assert_eq!(
            problem(IdentifierKind::Schema, "pg_catalog"),
            Some(IdentifierProblem::Reserved)
        );
    }

    #[test]
    fn statements_quote_the_validated_names() {
        let s = Statements::new("auth", "web_sessions").expect("valid");
        assert_eq!(s.qualified, "\"auth\".\"web_sessions\"");
        assert!(s.load.contains("FROM \"auth\".\"web_sessions\""));
        assert!(matches!(
            Statements::new("auth", "x\"y"),
            Err(Error::InvalidIdentifier {
                kind: IdentifierKind::Table,
                ..
            })
        ));
    }
}
