//! The shared conformance suite (store contract, HTTP level and the
//! serializable-sessions cases) on `MySqlStore`, each test in a fresh
//! database of its own.

mod common;

session_core::conformance_tests!(common::fresh_store());
