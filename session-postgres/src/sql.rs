//! The SQL: identifier validation, the statements (templated once per store
//! with its validated schema and table) and the embedded migrations.

use std::sync::Arc;

use crate::error::{Error, IdentifierKind, IdentifierProblem};

/// The longest schema or table name accepted, in bytes.
///
/// Postgres allows 63; the index names derived from the table name
/// (`<table>_expires_at_idx`, `<table>_sweep_at_idx`, `<table>_principal_idx`)
/// need the rest.
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

/// The columns of a record, in the order `decode_row` reads them. Plain
/// columns: the `timestamptz` values travel in Postgres' binary form and are
/// converted by the store (see `PgTimestamp`), and `data` (`json`) travels as
/// its text, so reading a record costs the server no conversion at all.
const RECORD_COLUMNS: &str = "format, version, data, principal, created_at, last_access, \
                              idle_deadline, absolute_deadline, idle_timeout_ms, persistent";

/// The new `sweep_at` of a row whose `expires_at` becomes `expires`: the old
/// value while it is within `slack` of `expires`, else `expires` itself.
///
/// `sweep_at` is what the sweeper's index is on: the sweeper looks at rows
/// whose `sweep_at` has passed and deletes those whose `expires_at` has. An
/// index on `expires_at`, which every write moves, made every write update
/// the table and all its indexes. `sweep_at` changes only about once per
/// `slack` of a session's activity (or when its lifetime changes by more),
/// so most writes leave every indexed column as it was and Postgres makes
/// them HOT updates: no index entry written, the old row version pruned in
/// place. The window is on both sides so that the jitter of a few
/// milliseconds between the lifetimes successive writes compute (and
/// between app servers' clocks) does not move it either.
fn sweep_at(expires: &str, slack: &str) -> String {
    format!(
        "CASE WHEN sweep_at BETWEEN {expires} - {slack} AND {expires} + {slack} \
            THEN sweep_at ELSE {expires} END"
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
    /// The row under a key, live or expired, and which (`live`).
    pub(crate) load_observed: Arc<str>,
    /// Deletes the expired row a load met (of the version it read).
    pub(crate) purge_expired_key: Arc<str>,
    pub(crate) save: Arc<str>,
    /// The live version of a row: only run after a save updated nothing.
    pub(crate) live_version: Arc<str>,
    pub(crate) touch: Arc<str>,
    pub(crate) delete: Arc<str>,
    pub(crate) delete_if_unchanged: Arc<str>,
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
        let columns = RECORD_COLUMNS;
        // Liveness is decided by the database clock alone: `expires_at` is
        // `now()` plus a duration the app computed, and every check compares
        // it with `now()`. App-clock instants are stored, never compared.
        let create = format!(
            "INSERT INTO {t} AS s (key, format, version, data, principal, created_at, \
                last_access, idle_deadline, absolute_deadline, idle_timeout_ms, persistent, \
                expires_at, sweep_at) \
             VALUES ($1, {FORMAT}, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                now() + $11::interval, now() + $11::interval) \
             ON CONFLICT (key) DO UPDATE SET format = excluded.format, \
                version = excluded.version, data = excluded.data, \
                principal = excluded.principal, created_at = excluded.created_at, \
                last_access = excluded.last_access, idle_deadline = excluded.idle_deadline, \
                absolute_deadline = excluded.absolute_deadline, \
                idle_timeout_ms = excluded.idle_timeout_ms, persistent = excluded.persistent, \
                expires_at = excluded.expires_at, sweep_at = excluded.sweep_at \
             WHERE s.expires_at <= now()"
        );
        let live = "key = $1 AND expires_at > now()";
        let load = format!("SELECT {columns} FROM {t} WHERE {live}");
        // The same one row by key, its expiry decided in the same statement:
        // an expired row costs the load nothing more until it is met, and
        // then one DELETE, which only one of several loads that met it wins
        // (the version and the expiry re-checked on the row it locked).
        let load_observed =
            format!("SELECT {columns}, expires_at > now() AS live FROM {t} WHERE key = $1");
        let purge_expired_key =
            format!("DELETE FROM {t} WHERE key = $1 AND version = $2 AND expires_at <= now()");
        // The common case, Saved, is this one plain UPDATE. It skips a row
        // whose version already differs in its snapshot without waiting for
        // the row lock, so under many parallel saves only those that can
        // still win queue on the row; one that waited re-checks its WHERE on
        // the row the other writer left (READ COMMITTED), so it never
        // overwrites a newer version nor revives a deleted row. Only when it
        // updated nothing does the store run `live_version`, a new statement
        // with a new snapshot that sees what that writer committed: a live
        // row is a Conflict, none is Gone.
        let save = format!(
            "UPDATE {t} SET format = {FORMAT}, version = $3, data = $4, principal = $5, \
                created_at = $6, last_access = $7, idle_deadline = $8, \
                absolute_deadline = $9, idle_timeout_ms = $10, persistent = $11, \
                expires_at = now() + $12::interval, sweep_at = {sweep} \
             WHERE {live} AND version = $2",
            sweep = sweep_at("(now() + $12::interval)", "$13::interval"),
        );
        let live_version = format!("SELECT version FROM {t} WHERE {live}");
        // The idle deadline only ever moves later (a parallel save may have
        // set a longer idle timeout than the toucher saw) and never past the
        // absolute one. The new lifetime is a duration on the app clock (that
        // deadline minus the app's now, $2), added to the database's now():
        // written as the deadline plus the clock offset `now() - $2`, an
        // interval of a few milliseconds that no time zone rule can touch.
        let capped = "LEAST(GREATEST($3::timestamptz, idle_deadline), absolute_deadline)";
        let expires = format!("({capped} + (now() - $2::timestamptz))");
        let touch = format!(
            "UPDATE {t} SET last_access = $2, idle_deadline = {capped}, \
                expires_at = {expires}, sweep_at = {sweep} \
             WHERE {live} AND version = $5",
            sweep = sweep_at(&expires, "$4::interval"),
        );
        let delete = format!("DELETE FROM {t} WHERE key = $1");
        // Like `save`: a row whose version differs is left alone, and one
        // that waited for a parallel writer re-checks on the row it left.
        let delete_if_unchanged = format!("DELETE FROM {t} WHERE {live} AND version = $2");
        let list_by_principal = format!(
            "SELECT key, {columns} FROM {t} \
             WHERE principal = $1 AND expires_at > now() ORDER BY last_access DESC"
        );
        // Expired sessions of the principal go too, but only live ones count.
        let delete_by_principal = format!(
            "WITH gone AS (DELETE FROM {t} WHERE principal = $1 RETURNING expires_at > now() AS live) \
             SELECT count(*) FILTER (WHERE live) FROM gone"
        );
        // A row's `sweep_at` is at most its slack (see `sweep_at`) after its
        // `expires_at`, so the index on `sweep_at` finds every expired row
        // that long after it expired at the latest, usually at once;
        // `expires_at` decides. SKIP LOCKED: the sweeper never waits behind
        // a request's write. The rows are deleted by the `ctid` the locking
        // read returned (a TID scan of the batch): joining on `key` let the
        // planner pick a hash join over a scan of the whole table for every
        // batch, which made a sweep quadratic in the table size. A row
        // changed after the statement's snapshot is not deleted (its new
        // version is not visible to the TID scan), and the outer re-check
        // keeps a row that a create revived in the meantime.
        let delete_expired_batch = format!(
            "DELETE FROM {t} WHERE ctid = ANY (ARRAY ( \
                SELECT ctid FROM {t} WHERE sweep_at <= now() AND expires_at <= now() \
                LIMIT $1 FOR UPDATE SKIP LOCKED \
             )) AND expires_at <= now()"
        );
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            qualified: t,
            create: create.into(),
            load: load.into(),
            load_observed: load_observed.into(),
            purge_expired_key: purge_expired_key.into(),
            save: save.into(),
            live_version: live_version.into(),
            touch: touch.into(),
            delete: delete.into(),
            delete_if_unchanged: delete_if_unchanged.into(),
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
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        description: "index sweep_at, not expires_at, so that most writes are HOT updates",
        // Rows written without `sweep_at` (by an older version of this
        // crate during a rolling upgrade, or by hand) get `-infinity`: the
        // sweeper then checks them at every sweep, which is correct for any
        // `expires_at`. Live rows get their exact bound here; expired ones
        // keep `-infinity` and go at the next sweep.
        sql: |s| {
            let (t, schema, table) = (&s.qualified, &s.schema, &s.table);
            format!(
                "ALTER TABLE {t} ADD COLUMN sweep_at timestamptz NOT NULL DEFAULT '-infinity'; \
                 UPDATE {t} SET sweep_at = expires_at WHERE expires_at > now(); \
                 CREATE INDEX \"{table}_sweep_at_idx\" ON {t} (sweep_at); \
                 DROP INDEX IF EXISTS \"{schema}\".\"{table}_expires_at_idx\";"
            )
        },
    },
];

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
