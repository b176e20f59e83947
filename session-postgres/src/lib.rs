//! Postgres session store (in progress).
