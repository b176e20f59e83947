//! The shared conformance suite (store contract and HTTP level) on
//! `PostgresStore`, each test in a fresh schema of its own.

mod common;

session_core::conformance_tests!(common::fresh_store());
