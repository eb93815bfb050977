#![expect(clippy::expect_used, reason = "test set-up fails loudly, with the reason, where it cannot go on")]

//! One integration binary: the real application on a real port, against a
//! real PostgreSQL and a real SQLite file. Every scenario runs on both.

mod core_verifier;
mod helpers;

mod admin_api;
mod audit;
mod faults;
mod foundation;
mod keys;
mod organisations;
mod security_admin;
mod security_auth;
mod security_jose;
mod security_refresh;
mod tokens;
mod users;
