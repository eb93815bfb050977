//! Pure types and rules: permission sets and the intersection that decides
//! what a token holds, the role catalogue, validated names. Imports nothing
//! from actix, diesel or jsonwebtoken.

pub mod names;
pub mod permissions;
pub mod roles;
pub mod throttle;

pub use permissions::PermissionSet;
pub use roles::{OrganisationRole, RoleCatalog};
