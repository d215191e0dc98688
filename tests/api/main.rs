//! The integration test binary: real PostgreSQL (each test in its own fresh database), real HTTP
//! on loopback. One binary, so the build links once.

mod browser;
mod catalog;
mod chat;
mod cli;
mod crash;
mod demo;
mod health;
mod helpers;
mod ingress;
mod kill;
mod loadgen;
mod migrations;
mod ops;
mod replies;
mod staff;
mod store;
mod tenancy;
mod timeline;
