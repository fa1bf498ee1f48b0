//! tmp
pub mod import;
