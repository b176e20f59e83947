//! Errors of setting a store up: names, connecting, migrating.

use std::fmt;

/// Setting a [`MySqlStore`](crate::MySqlStore) up failed.
///
/// Session operations report [`StoreError`](session_core::StoreError), the
/// contract's error; a [`Error::MissingTable`] is kept as its source when the
/// table was never migrated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database or table name was refused (see
    /// [`MySqlStoreBuilder`](crate::MySqlStoreBuilder) for the rules).
    #[error("invalid {kind} name {name:?}: {problem}")]
    InvalidIdentifier {
        /// Which name it was.
        kind: NameKind,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// Connecting to the server failed (bad URL, server unreachable, authentication).
    #[error("could not connect to MySQL/MariaDB")]
    Connect(#[source] sqlx::Error),
    /// Running the embedded migrations failed. MySQL commits each DDL
    /// statement on its own, so the migrations applied before the failing
    /// one stay applied (and recorded); running `migrate` again resumes.
    #[error("session table migration failed")]
    Migrate(#[source] sqlx::Error),
    /// The session table (or its database) does not exist:
    /// [`MySqlStore::migrate`](crate::MySqlStore::migrate) was not run for it.
    #[error("session table {table} does not exist (run MySqlStore::migrate)")]
    MissingTable {
        /// The qualified table name.
        table: String,
        /// What the server said (error 1146 or 1049).
        #[source]
        source: sqlx::Error,
    },
}

/// Which name an [`Error::InvalidIdentifier`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameKind {
    /// The database name.
    Database,
    /// The table name.
    Table,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Database => "database",
            Self::Table => "table",
        })
    }
}

/// What is wrong with a refused name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes.
    TooLong,
    /// The name starts with a digit.
    LeadingDigit,
    /// The name contains a character other than `a`-`z`, `0`-`9` and `_`.
    InvalidCharacter(char),
    /// The name is one of the server's own databases (`mysql`, `sys`,
    /// `information_schema`, `performance_schema`).
    SystemDatabase,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong => write!(f, "it is longer than {} bytes", crate::MAX_NAME_LEN),
            Self::LeadingDigit => f.write_str("it starts with a digit"),
            Self::InvalidCharacter(c) => {
                write!(f, "it contains {c:?} (allowed: a-z, 0-9, `_`)")
            }
            Self::SystemDatabase => f.write_str("it is one of the server's own databases"),
        }
    }
}
