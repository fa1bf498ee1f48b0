//! Generated tonic/prost code for Augur's protocol, `proto/augur/v1`.
//! This crate holds no logic; conversions live with the code that owns the types.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("augur.v1");
}

mod convert;
