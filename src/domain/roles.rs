//! The role catalogue: organisation roles (each a ceiling) and system roles
//! (each a grant), checked once against the permission vocabulary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::permissions::{Ceiling, PermissionSet, STS_OWN_PERMISSIONS, is_system_scoped};

/// The built-in system role that holds every permission.
pub const ADMIN_ROLE: &str = "ADMIN";

/// The seven organisation roles of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrganisationRole {
    Issuer,
    Holder,
    Verifier,
    WalletProvider,
    NationalRegistry,
    AccessCertificateProvider,
    RegistrationCertificateProvider,
}

impl OrganisationRole {
    pub const ALL: [Self; 7] = [
        Self::Issuer,
        Self::Holder,
        Self::Verifier,
        Self::WalletProvider,
        Self::NationalRegistry,
        Self::AccessCertificateProvider,
        Self::RegistrationCertificateProvider,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issuer => "ISSUER",
            Self::Holder => "HOLDER",
            Self::Verifier => "VERIFIER",
            Self::WalletProvider => "WALLET_PROVIDER",
            Self::NationalRegistry => "NATIONAL_REGISTRY",
            Self::AccessCertificateProvider => "ACCESS_CERTIFICATE_PROVIDER",
            Self::RegistrationCertificateProvider => "REGISTRATION_CERTIFICATE_PROVIDER",
        }
    }
}

impl fmt::Display for OrganisationRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrganisationRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| format!("unknown organisation role `{s}`"))
    }
}

/// Why a role configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleConfigError {
    #[error("roles: not valid TOML: {0}")]
    Syntax(String),
    #[error("roles: {role}: unknown permission `{permission}` (not in Core's vocabulary)")]
    UnknownPermission { role: String, permission: String },
    #[error("roles: {role}: unknown group `@{group}`")]
    UnknownGroup { role: String, group: String },
    #[error("roles: organisation role {role} may not hold system-scoped permission `{permission}`")]
    SystemPermissionInCeiling { role: String, permission: String },
    #[error("roles: organisation role {0} has no mapping")]
    MissingOrganisationRole(String),
    #[error("roles: unknown organisation role `{0}`")]
    UnknownOrganisationRole(String),
    #[error("roles: system role ADMIN is built in (every permission) and may not be redefined")]
    AdminRedefined,
    #[error("roles: system role name `{0}` must be SCREAMING_SNAKE_CASE")]
    BadRoleName(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    organisation_roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    system_roles: BTreeMap<String, Vec<String>>,
}

/// Both mappings, resolved and validated; built once at start.
#[derive(Debug, Clone)]
pub struct RoleCatalog {
    organisation_roles: BTreeMap<OrganisationRole, PermissionSet>,
    system_roles: BTreeMap<String, PermissionSet>,
    vocabulary: PermissionSet,
}

/// Parses Core's vocabulary file (one name a line, `#` comments) and adds the
/// STS's own permissions.
pub fn vocabulary(core_list: &str) -> PermissionSet {
    core_list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .chain(STS_OWN_PERMISSIONS)
        .collect()
}

impl RoleCatalog {
    pub fn from_toml(text: &str, vocabulary: PermissionSet) -> Result<Self, RoleConfigError> {
        let file: RolesFile = toml::from_str(text).map_err(|e| RoleConfigError::Syntax(e.message().to_owned()))?;
        let resolve = |role: &str, names: &[String]| -> Result<PermissionSet, RoleConfigError> {
            let mut set = PermissionSet::new();
            for name in names {
                let members = match name.strip_prefix('@') {
                    Some(group) => file
                        .groups
                        .get(group)
                        .ok_or_else(|| RoleConfigError::UnknownGroup { role: role.into(), group: group.into() })?,
                    None => std::slice::from_ref(name),
                };
                for permission in members {
                    if !vocabulary.contains(permission) {
                        return Err(RoleConfigError::UnknownPermission {
                            role: role.into(),
                            permission: permission.clone(),
                        });
                    }
                    set.insert(permission);
                }
            }
            Ok(set)
        };

        let mut organisation_roles = BTreeMap::new();
        for (name, names) in &file.organisation_roles {
            let role =
                OrganisationRole::from_str(name).map_err(|_| RoleConfigError::UnknownOrganisationRole(name.clone()))?;
            let set = resolve(name, names)?;
            if let Some(permission) = set.iter().find(|p| is_system_scoped(p)) {
                return Err(RoleConfigError::SystemPermissionInCeiling {
                    role: name.clone(),
                    permission: permission.to_owned(),
                });
            }
            organisation_roles.insert(role, set);
        }
        if let Some(missing) = OrganisationRole::ALL.iter().find(|r| !organisation_roles.contains_key(r)) {
            return Err(RoleConfigError::MissingOrganisationRole(missing.to_string()));
        }

        let mut system_roles = BTreeMap::new();
        for (name, names) in &file.system_roles {
            if name == ADMIN_ROLE {
                return Err(RoleConfigError::AdminRedefined);
            }
            if !is_role_name(name) {
                return Err(RoleConfigError::BadRoleName(name.clone()));
            }
            system_roles.insert(name.clone(), resolve(name, names)?);
        }
        system_roles.insert(ADMIN_ROLE.to_owned(), vocabulary);
        Ok(Self { organisation_roles, system_roles, vocabulary })
    }

    /// The ceiling of an organisation with these roles.
    pub fn ceiling(&self, roles: &[OrganisationRole]) -> Ceiling {
        let mut set = PermissionSet::new();
        for role in roles {
            if let Some(permissions) = self.organisation_roles.get(role) {
                set.extend(permissions);
            }
        }
        Ceiling::new(set)
    }

    /// A user's permissions: the union over their system roles. Names that
    /// are no longer configured grant nothing.
    pub fn user_permissions<S: AsRef<str>>(&self, system_roles: &[S]) -> PermissionSet {
        let mut set = PermissionSet::new();
        for role in system_roles {
            if let Some(permissions) = self.system_roles.get(role.as_ref()) {
                set.extend(permissions);
            }
        }
        set
    }

    pub fn has_system_role(&self, name: &str) -> bool {
        self.system_roles.contains_key(name)
    }

    pub fn system_roles(&self) -> &BTreeMap<String, PermissionSet> {
        &self.system_roles
    }

    pub fn organisation_roles(&self) -> &BTreeMap<OrganisationRole, PermissionSet> {
        &self.organisation_roles
    }

    pub fn vocabulary(&self) -> &PermissionSet {
        &self.vocabulary
    }
}

fn is_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Validates a list of system role names against the catalogue, returning
/// them sorted and deduplicated.
pub fn validate_system_roles(catalog: &RoleCatalog, names: &[String]) -> Result<Vec<String>, String> {
    let mut out = BTreeSet::new();
    for name in names {
        if !catalog.has_system_role(name) {
            return Err(format!("unknown system role `{name}`"));
        }
        out.insert(name.clone());
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORE: &str = include_str!("../../config/permissions.txt");
    const DEFAULT_ROLES: &str = include_str!("../../config/roles.toml");

    fn catalog(text: &str) -> Result<RoleCatalog, RoleConfigError> {
        RoleCatalog::from_toml(text, vocabulary(CORE))
    }

    #[test]
    fn the_shipped_roles_are_valid_and_cover_all_seven_organisation_roles() {
        let catalog = catalog(DEFAULT_ROLES);
        let catalog = catalog.as_ref().map_err(ToString::to_string);
        assert!(catalog.is_ok(), "{catalog:?}");
        if let Ok(c) = catalog {
            assert_eq!(c.organisation_roles().len(), 7);
            assert!(c.system_roles().len() >= 4);
            assert!(c.ceiling(&[OrganisationRole::Issuer]).permissions().contains("CREDENTIAL_REVOKE"));
            assert!(!c.ceiling(&[OrganisationRole::Verifier]).permissions().contains("CREDENTIAL_ISSUE"));
        }
    }

    #[test]
    fn admin_holds_every_permission() {
        let Ok(c) = catalog(DEFAULT_ROLES) else { panic!("default roles must load") };
        assert_eq!(c.user_permissions(&["ADMIN"]), vocabulary(CORE));
    }

    #[test]
    fn an_unknown_permission_is_named() {
        let text = DEFAULT_ROLES.replace("\"CREDENTIAL_ISSUE\",", "\"CREDENTIAL_ISSSUE\",");
        let err = catalog(&text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("CREDENTIAL_ISSSUE"), "{err}");
    }

    #[test]
    fn a_ceiling_with_an_sts_permission_is_refused() {
        let text = DEFAULT_ROLES.replace("ISSUER = [", "ISSUER = [\"STS_USER_LIST\", ");
        assert!(matches!(catalog(&text), Err(RoleConfigError::SystemPermissionInCeiling { .. })));
    }

    #[test]
    fn admin_cannot_be_redefined() {
        let text = format!("{DEFAULT_ROLES}\nADMIN = [\"DID_LIST\"]\n");
        assert_eq!(catalog(&text).err(), Some(RoleConfigError::AdminRedefined));
    }
}
