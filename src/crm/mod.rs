//! Shop CRM adapters. Today: ShopMonkey v3.

pub mod keys;
pub mod shopmonkey;
