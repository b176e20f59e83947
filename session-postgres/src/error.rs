//! Errors of setting a store up: names, connecting, migrating.

use std::fmt;

/// Setting a [`PostgresStore`](crate::PostgresStore) up failed.
///
/// Session operations report [`StoreError`](session_core::StoreError), the
/// contract's error; a [`Error::MissingTable`] is kept as its source when the
/// table was never migrated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A schema or table name was refused (see
    /// [`PostgresStoreBuilder`](crate::PostgresStoreBuilder) for the rules).
    #[error("invalid {kind} name {name:?}: {problem}")]
    InvalidIdentifier {
        /// Which name it was.
        kind: IdentifierKind,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: IdentifierProblem,
    },
    /// Connecting to Postgres failed (bad URL, server unreachable, authentication).
    #[error("could not connect to Postgres")]
    Connect(#[source] sqlx::Error),
    /// Running the embedded migrations failed; the transaction they ran in was
    /// rolled back, so the schema is as it was.
    #[error("session table migration failed")]
    Migrate(#[source] sqlx::Error),
    /// No candidate server is the primary right now: each is in recovery
    /// (a standby not promoted yet) or unreachable. Writes wait for a
    /// promotion (see the crate docs, "Replicas and failover").
    #[error("no Postgres server is the primary (every candidate is in recovery or unreachable)")]
    NoPrimary,
    /// The session table does not exist: [`PostgresStore::migrate`](crate::PostgresStore::migrate)
    /// was not run against this database, schema and table.
    #[error("session table {table} does not exist (run PostgresStore::migrate)")]
    MissingTable {
        /// The qualified table name.
        table: String,
        /// What Postgres said (SQLSTATE `42P01` or `3F000`).
        #[source]
        source: sqlx::Error,
    },
}

/// Which identifier an [`Error::InvalidIdentifier`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentifierKind {
    /// The schema name.
    Schema,
    /// The table name.
    Table,
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Schema => "schema",
            Self::Table => "table",
        })
    }
}

/// What is wrong with a refused identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentifierProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_IDENTIFIER_LEN`](crate::MAX_IDENTIFIER_LEN) bytes.
    TooLong,
    /// The name starts with a digit.
    LeadingDigit,
    /// The name contains a character other than `a`-`z`, `0`-`9` and `_`.
    InvalidCharacter(char),
    /// The name starts with `pg_`, a prefix Postgres reserves for system schemas.
    Reserved,
}

impl fmt::Display for IdentifierProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong => write!(f, "it is longer than {} bytes", crate::MAX_IDENTIFIER_LEN),
            Self::LeadingDigit => f.write_str("it starts with a digit"),
            Self::InvalidCharacter(c) => write!(
                f,
                "it contains {c:?} (allowed: lowercase ASCII letters, digits, `_`)"
            ),
            Self::Reserved => f.write_str("the `pg_` prefix is reserved by Postgres"),
        }
    }
}
