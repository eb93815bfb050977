//! Our tokens: Ed25519 keys (ring), signing (jsonwebtoken), the JWKS, and the
//! one validation builder every route that accepts our tokens goes through.

pub mod claims;
pub mod keys;
pub mod opaque;
pub mod validation;

pub use claims::{AccessClaims, Actor};
pub use keys::{KeyError, KeyRing};
pub use validation::{TokenRejection, Verifier};
