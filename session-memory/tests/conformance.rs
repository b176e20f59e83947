//! The shared conformance suite (store contract and HTTP level) on `MemoryStore`.

session_core::conformance_tests!(async { session_memory::MemoryStore::new() });
