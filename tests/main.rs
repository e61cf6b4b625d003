//! Drover's integration tests: one test binary (every extra one re-links the whole dependency set).
//! They use real components only: a private redis-server per test on a free port, the real `drover`
//! binary for crash tests (killed with SIGKILL), the API over real HTTP on 127.0.0.1:0.

mod api;
mod cli;
mod client;
mod clusters;
mod crash;
mod dashboard;
mod deploy;
mod drain;
mod engine;
mod engine_bench;
mod harness;
mod hooks;
mod hostile;
mod import;
mod lab;
mod maas_adapter;
mod metrics;
mod openapi;
mod provision;
mod rbac;
mod schedules;
mod secrets;
mod sentinel;
mod shards;
mod storage;
mod tickets;
mod traces;
mod versioning;
mod writeback;
