//! The SQL: name checks, the statements (built once per store from its
//! checked names) and the embedded migrations.
//!
//! Every statement is written in the dialect MySQL 8.0 and MariaDB 10.6+
//! share: backtick-quoted names, `?` parameters, no `RETURNING`, no
//! `ON DUPLICATE KEY`, no server clock functions, no `SET_VAR` hints or
//! `SET STATEMENT` (each server has only one of them).

use std::sync::Arc;

use crate::error::{Error, NameKind, NameProblem};

/// The longest database or table name accepted, in bytes.
///
/// MySQL and MariaDB allow 64; the index names derived from the table name
/// (`<table>_expires_idx`, `<table>_principal_idx`) need the rest.
pub const MAX_NAME_LEN: usize = 48;

/// The server's own databases: never a home for sessions.
const SYSTEM_DATABASES: [&str; 4] = ["mysql", "sys", "information_schema", "performance_schema"];

/// Checks a database or table name against the rules in
/// [`MySqlStoreBuilder`](crate::MySqlStoreBuilder).
///
/// Lowercase only: on a server with `lower_case_table_names = 0` (Linux)
/// table names are case-sensitive, elsewhere they are not, and a lowercase
/// name is the same table on both.
pub(crate) fn check_name(kind: NameKind, name: &str) -> Result<(), Error> {
    let bad_char = name
        .chars()
        .find(|&c| !matches!(c, 'a'..='z' | '0'..='9' | '_'));
    let problem = match () {
        () if name.is_empty() => Some(NameProblem::Empty),
        () if name.len() > MAX_NAME_LEN => Some(NameProblem::TooLong),
        () if bad_char.is_some() => bad_char.map(NameProblem::InvalidCharacter),
        () if name.as_bytes()[0].is_ascii_digit() => Some(NameProblem::LeadingDigit),
        () if kind == NameKind::Database && SYSTEM_DATABASES.contains(&name) => {
            Some(NameProblem::SystemDatabase)
        }
        () => None,
    };
    problem.map_or(Ok(()), |problem| {
        Err(Error::InvalidIdentifier {
            kind,
            name: name.to_owned(),
            problem,
        })
    })
}

/// The record format the typed columns hold (the `format` column). It
/// matches session-core's encoding format tag, field for field.
pub(crate) const FORMAT: i16 = 1;

/// The columns of a record, in the order `decode_row` reads them.
pub(crate) const RECORD_COLUMNS: &str = "format, version, data, principal, created_at_ms, \
     last_access_ms, idle_deadline_ms, absolute_deadline_ms, idle_timeout_ms, persistent";

/// Every statement the store runs, built once per store. Shared strings, so
/// cloning a store or binding a query copies no SQL (and sqlx's
/// per-connection statement cache, keyed by the text, prepares each once).
///
/// Liveness is decided by the clock of the app server that runs the
/// statement: every statement that looks at liveness binds that clock's
/// "now" in Unix milliseconds (`? now`) and compares it with the BIGINT
/// `expires_at_ms`. The server's clock is never read (see the crate docs).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) database: Option<String>,
    pub(crate) table: String,
    /// `` `database`.`table` `` (or `` `table` ``), for statements and errors.
    pub(crate) qualified: String,
    /// Params: key, version, data, principal, principal_hash, created,
    /// last access, idle deadline, absolute deadline, idle timeout,
    /// persistent, expires.
    pub(crate) create: Arc<str>,
    /// Params: key, now. Makes room for a create under the key of an
    /// expired row (never of a live one).
    pub(crate) delete_expired_key: Arc<str>,
    /// Params: key, now.
    pub(crate) load: Arc<str>,
    /// The row under a key, live or expired, with its `expires_at_ms`.
    pub(crate) load_observed: Arc<str>,
    /// Params: the record's as for `create` but the key, then key,
    /// expected version, now.
    pub(crate) save: Arc<str>,
    /// Params: key, now. Only run after a compare-and-set changed nothing.
    pub(crate) live_version: Arc<str>,
    /// Params: idle deadline, idle deadline, last access, key, version, now.
    pub(crate) touch: Arc<str>,
    /// Params: key.
    pub(crate) delete: Arc<str>,
    /// Params: key, version, now.
    pub(crate) delete_if_unchanged: Arc<str>,
    /// Params: principal hash, now.
    pub(crate) list_by_principal: Arc<str>,
    /// Params: principal hash.
    pub(crate) keys_of_principal: Arc<str>,
    /// Params: now, limit.
    pub(crate) expired_keys: Arc<str>,
}

impl Statements {
    /// The statements for `table`, in `database` or the connection's own.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`] when a name breaks the rules: only
    /// checked names are ever spliced into SQL.
    pub(crate) fn new(database: Option<&str>, table: &str) -> Result<Self, Error> {
        if let Some(database) = database {
            check_name(NameKind::Database, database)?;
        }
        check_name(NameKind::Table, table)?;
        Ok(Self::unchecked(database, table))
    }

    /// The statements for names known to be valid.
    pub(crate) fn unchecked(database: Option<&str>, table: &str) -> Self {
        let t = match database {
            Some(database) => format!("`{database}`.`{table}`"),
            None => format!("`{table}`"),
        };
        let columns = RECORD_COLUMNS;
        let live = "store_key = ? AND expires_at_ms > ?";
        // In a statement that locks rows, the only index InnoDB may walk is
        // the primary key: a walk of the expiry (or principal) index locks
        // every entry it passes (next-key locks), and an UPDATE that took
        // them deadlocked with a DELETE holding the row (seen under the
        // conformance suite's save-racing-delete case, where MariaDB chose
        // the expiry index for the UPDATE). `+ 0` (and `IFNULL`) make those
        // columns unusable as an index there, so every locking statement
        // finds its rows by primary key alone; index hints would do the
        // same but single-table DELETE takes none, on either server.
        let live_locking = "store_key = ? AND expires_at_ms + 0 > ?";
        // A plain INSERT: a key that exists fails with error 1062, which the
        // store reads as "taken". Never an upsert, so two creates under one
        // key can never merge.
        let create = format!(
            "INSERT INTO {t} (store_key, format, version, data, principal, principal_hash, \
                created_at_ms, last_access_ms, idle_deadline_ms, absolute_deadline_ms, \
                idle_timeout_ms, persistent, expires_at_ms) \
             VALUES (?, {FORMAT}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        let delete_expired_key =
            format!("DELETE FROM {t} WHERE store_key = ? AND expires_at_ms + 0 <= ?");
        let load = format!("SELECT {columns} FROM {t} WHERE {live}");
        // The same one row by primary key, live or not: the store compares
        // its expiry with the `now` it would have bound. An expired row then
        // costs one `delete_expired_key`, which only one of several loads
        // that met it wins (the expiry re-checked on the row it locked).
        let load_observed = format!("SELECT {columns}, expires_at_ms FROM {t} WHERE store_key = ?");
        // One row by primary key, one row lock: the statement waits for a
        // parallel writer of the row and then re-checks its WHERE on the row
        // that writer left (an UPDATE reads the latest committed version),
        // so it never overwrites a newer version nor revives a deleted row.
        // Every column is assigned a value of its own (no assignment reads
        // a column set earlier in the statement), so MySQL's left-to-right
        // assignment and MariaDB's SIMULTANEOUS_ASSIGNMENT agree.
        let save = format!(
            "UPDATE {t} SET format = {FORMAT}, version = ?, data = ?, principal = ?, \
                principal_hash = ?, created_at_ms = ?, last_access_ms = ?, \
                idle_deadline_ms = ?, absolute_deadline_ms = ?, idle_timeout_ms = ?, \
                persistent = ?, expires_at_ms = ? \
             WHERE {live_locking} AND version = ?"
        );
        let live_version = format!("SELECT version FROM {t} WHERE {live}");
        // The idle deadline only ever moves later (a parallel save may have
        // set a longer idle timeout than the toucher saw) and never past the
        // absolute one. `expires_at_ms` is assigned first, from the old
        // `idle_deadline_ms`: the same value under either assignment order.
        let capped = "LEAST(GREATEST(?, idle_deadline_ms), absolute_deadline_ms)";
        let touch = format!(
            "UPDATE {t} SET expires_at_ms = {capped}, idle_deadline_ms = {capped}, \
                last_access_ms = ? \
             WHERE store_key = ? AND version = ? AND expires_at_ms + 0 > ?"
        );
        let delete = format!("DELETE FROM {t} WHERE store_key = ?");
        let delete_if_unchanged = format!("DELETE FROM {t} WHERE {live_locking} AND version = ?");
        let list_by_principal = format!(
            "SELECT store_key, {columns} FROM {t} \
             WHERE principal_hash = ? AND expires_at_ms > ? ORDER BY last_access_ms DESC"
        );
        // A plain (consistent, non-locking) read: the rows are then deleted
        // by primary key, in key order (see `delete_keys`).
        let keys_of_principal =
            format!("SELECT store_key, expires_at_ms FROM {t} WHERE principal_hash = ?");
        // Oldest first, through the index on `expires_at_ms`; a plain read
        // that locks nothing. The sweeper deletes what it found by primary
        // key, in key order, re-checking expiry (see `delete_keys`).
        let expired_keys = format!(
            "SELECT store_key FROM {t} WHERE expires_at_ms <= ? \
             ORDER BY expires_at_ms LIMIT ?"
        );
        Self {
            database: database.map(str::to_owned),
            table: table.to_owned(),
            qualified: t,
            create: create.into(),
            delete_expired_key: delete_expired_key.into(),
            load: load.into(),
            load_observed: load_observed.into(),
            save: save.into(),
            live_version: live_version.into(),
            touch: touch.into(),
            delete: delete.into(),
            delete_if_unchanged: delete_if_unchanged.into(),
            list_by_principal: list_by_principal.into(),
            keys_of_principal: keys_of_principal.into(),
            expired_keys: expired_keys.into(),
        }
    }

    /// `DELETE` of `n` keys given as parameters (sorted by the caller), in
    /// primary-key order, each only while `condition` (with its own
    /// parameters after the keys) holds. `condition` must not be usable
    /// through a secondary index (write `expires_at_ms + 0`, see `new`).
    ///
    /// Every statement that deletes more than one row goes through here:
    /// rows are found by primary key and locked in key order, and every
    /// other statement locks at most one row, so no two statements can wait
    /// for each other's locks in a cycle (InnoDB deadlocks).
    pub(crate) fn delete_keys(&self, n: usize, condition: &str) -> String {
        let mut marks = "?, ".repeat(n);
        marks.truncate(marks.len().saturating_sub(2));
        format!(
            "DELETE FROM {} WHERE store_key IN ({marks}) AND {condition} ORDER BY store_key",
            self.qualified
        )
    }

    /// The table that records which migrations ran, per session table.
    pub(crate) fn migrations_table(&self) -> String {
        match &self.database {
            Some(database) => format!("`{database}`.`session_store_migrations`"),
            None => "`session_store_migrations`".to_owned(),
        }
    }
}

/// One embedded migration: a version and its SQL, built from the names.
pub(crate) struct Migration {
    pub(crate) version: i32,
    pub(crate) description: &'static str,
    /// One statement (MySQL commits every DDL statement on its own, so a
    /// migration is one statement, and idempotent where it can be).
    pub(crate) sql: fn(&Statements) -> String,
}

/// Every migration, oldest first. Applied ones are never edited: a change is
/// a new migration.
///
/// The layout avoids the traps of other MySQL session stores:
/// - `data` is a `LONGBLOB` (up to 4 GiB): no 64 KiB `BLOB` that strict
///   mode refuses and non-strict mode silently truncates. The server's
///   `max_allowed_packet` is then the limit; a bigger write fails loudly.
/// - instants are `BIGINT` Unix milliseconds: no `TIMESTAMP` converted
///   through the connection's time zone, ending in 2038, or given
///   `ON UPDATE CURRENT_TIMESTAMP` by MariaDB's
///   `explicit_defaults_for_timestamp = OFF`.
/// - the key column is ASCII with a binary collation: store keys are
///   base64url, where `a` and `A` differ.
/// - the principal is indexed through its SHA-256 (`principal_hash`), so a
///   principal of any length is indexed and compared exactly (no prefix
///   index, no PAD SPACE collation making `"ada"` equal `"ada "`).
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "create the session table",
    sql: |s| {
        let (t, table) = (&s.qualified, &s.table);
        format!(
            "CREATE TABLE IF NOT EXISTS {t} ( \
                store_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
                format SMALLINT NOT NULL, \
                version BIGINT NOT NULL, \
                data LONGBLOB NOT NULL, \
                principal LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, \
                principal_hash BINARY(32) NULL, \
                created_at_ms BIGINT NOT NULL, \
                last_access_ms BIGINT NOT NULL, \
                idle_deadline_ms BIGINT NOT NULL, \
                absolute_deadline_ms BIGINT NOT NULL, \
                idle_timeout_ms BIGINT NOT NULL, \
                persistent BOOLEAN NOT NULL, \
                expires_at_ms BIGINT NOT NULL, \
                PRIMARY KEY (store_key), \
                INDEX `{table}_expires_idx` (expires_at_ms), \
                INDEX `{table}_principal_idx` (principal_hash) \
             ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
        )
    },
}];

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: NameKind, name: &str) -> Option<NameProblem> {
        match check_name(kind, name) {
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
    fn names_are_checked() {
        use NameProblem::*;
        for name in ["sessions", "_x", "auth_2", &"a".repeat(MAX_NAME_LEN)] {
            assert_eq!(problem(NameKind::Database, name), None, "{name}");
            assert_eq!(problem(NameKind::Table, name), None, "{name}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for (name, expected) in [
            ("", Empty),
            (long.as_str(), TooLong),
            ("1abc", LeadingDigit),
            ("Sessions", InvalidCharacter('S')),
            ("a`; DROP TABLE x; --", InvalidCharacter('`')),
            ("a.b", InvalidCharacter('.')),
            ("sessiöns", InvalidCharacter('ö')),
        ] {
            assert_eq!(problem(NameKind::Table, name), Some(expected), "{name:?}");
        }
        assert_eq!(problem(NameKind::Database, "mysql"), Some(SystemDatabase));
        assert_eq!(problem(NameKind::Table, "mysql"), None);
    }

    #[test]
    fn statements_quote_the_checked_names() {
        let s = Statements::new(Some("auth"), "web_sessions").expect("valid");
        assert_eq!(s.qualified, "`auth`.`web_sessions`");
        assert!(s.load.contains("FROM `auth`.`web_sessions`"));
        assert_eq!(Statements::new(None, "s").expect("valid").qualified, "`s`");
        assert_eq!(
            s.delete_keys(3, "expires_at_ms + 0 <= ?"),
            "DELETE FROM `auth`.`web_sessions` WHERE store_key IN (?, ?, ?) \
             AND expires_at_ms + 0 <= ? ORDER BY store_key"
        );
    }
}
