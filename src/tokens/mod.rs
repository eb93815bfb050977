//! Our tokens: Ed25519 keys (ring), signing (jsonwebtoken), the JWKS, the key
//! lifecycle (states, rotation, the keys directory), and the one validation
//! builder every route that accepts our tokens goes through.

pub mod claims;
pub mod keys;
pub mod keystore;
pub mod live;
pub mod opaque;
pub mod rotation;
pub mod validation;

pub use claims::{AccessClaims, Actor};
pub use keys::{KeyError, KeyRing};
pub use keystore::KeyDir;
pub use live::LiveKeys;
pub use rotation::Timing;
pub use validation::{TokenRejection, Verifier};
