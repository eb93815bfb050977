//! sts: the organisation-scoped Security Token Service.

pub mod api;
pub mod app;
pub mod blocking;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod secret;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tokens;
