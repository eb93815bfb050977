//! Permission sets and the one policy of the product: a token holds exactly
//! what the user may do within what the organisation allows.

use std::collections::BTreeSet;

use serde::Serialize;

/// The STS's own administrative permissions (CONTRACT §2). Core's vocabulary
/// already holds the `STS_ORGANISATION_*` ones.
pub const STS_OWN_PERMISSIONS: [&str; 7] = [
    "STS_AUDIT_LIST",
    "STS_TOKEN_DELEGATE",
    "STS_USER_CREATE",
    "STS_USER_DELETE",
    "STS_USER_DETAIL",
    "STS_USER_EDIT",
    "STS_USER_LIST",
];

/// System-scoped permissions only ever appear in system tokens (tokens
/// without an organisation).
pub fn is_system_scoped(permission: &str) -> bool {
    permission.starts_with("STS_") || permission.starts_with("SYSTEM_")
}

/// A set of permission names; iterates sorted and free of duplicates, which
/// is the order the `permissions` claim needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PermissionSet(BTreeSet<String>);

impl PermissionSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, permission: &str) -> bool {
        self.0.contains(permission)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn insert(&mut self, permission: impl Into<String>) {
        self.0.insert(permission.into());
    }

    pub fn extend(&mut self, other: &PermissionSet) {
        self.0.extend(other.0.iter().cloned());
    }

    pub fn intersection(&self, other: &PermissionSet) -> PermissionSet {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &PermissionSet) -> PermissionSet {
        Self(self.0.difference(&other.0).cloned().collect())
    }

    pub fn is_subset(&self, other: &PermissionSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Only the system-scoped members.
    pub fn system_scoped(&self) -> PermissionSet {
        Self(self.0.iter().filter(|p| is_system_scoped(p)).cloned().collect())
    }

    /// Only the organisation-scoped members.
    pub fn organisation_scoped(&self) -> PermissionSet {
        Self(self.0.iter().filter(|p| !is_system_scoped(p)).cloned().collect())
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

impl<S: Into<String>> FromIterator<S> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(Into::into).collect())
    }
}

/// An organisation's ceiling: the union of its roles' permissions. It never
/// holds a system-scoped permission, so no organisation can lift a user into
/// administration of the STS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ceiling(PermissionSet);

impl Ceiling {
    /// Drops system-scoped names; the role catalogue refuses them at start,
    /// this keeps the invariant whatever the input.
    pub fn new(permissions: PermissionSet) -> Self {
        Self(permissions.organisation_scoped())
    }

    pub fn permissions(&self) -> &PermissionSet {
        &self.0
    }
}

/// Permissions of an organisation token: `user ∩ ceiling`.
pub fn organisation_token_permissions(user: &PermissionSet, ceiling: &Ceiling) -> PermissionSet {
    user.intersection(&ceiling.0)
}

/// Permissions of a system token: `user ∩ system-scoped`.
pub fn system_token_permissions(user: &PermissionSet) -> PermissionSet {
    user.system_scoped()
}

/// Why a token for a member holds what it holds (the explain endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub user_permissions: PermissionSet,
    pub ceiling: PermissionSet,
    pub granted: PermissionSet,
    /// Organisation-scoped permissions the user has that the ceiling removed.
    pub removed_by_ceiling: PermissionSet,
}

pub fn explain(user: &PermissionSet, ceiling: &Ceiling) -> Explanation {
    let granted = organisation_token_permissions(user, ceiling);
    Explanation {
        removed_by_ceiling: user.organisation_scoped().difference(&granted),
        user_permissions: user.clone(),
        ceiling: ceiling.0.clone(),
        granted,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(names: &[&str]) -> PermissionSet {
        names.iter().copied().collect()
    }

    #[test]
    fn an_org_token_holds_only_what_both_user_and_ceiling_allow() {
        let user = set(&["CREDENTIAL_ISSUE", "PROOF_ISSUE", "STS_USER_LIST"]);
        let ceiling = Ceiling::new(set(&["CREDENTIAL_ISSUE", "CREDENTIAL_REVOKE"]));
        assert_eq!(organisation_token_permissions(&user, &ceiling), set(&["CREDENTIAL_ISSUE"]));
    }

    #[test]
    fn a_ceiling_never_carries_system_permissions() {
        let ceiling = Ceiling::new(set(&["STS_USER_LIST", "SYSTEM_HISTORY_LIST", "DID_LIST"]));
        assert_eq!(ceiling.permissions(), &set(&["DID_LIST"]));
    }

    #[test]
    fn a_system_token_holds_only_system_scoped_permissions() {
        let user = set(&["CREDENTIAL_ISSUE", "STS_USER_LIST", "SYSTEM_HISTORY_LIST"]);
        assert_eq!(system_token_permissions(&user), set(&["STS_USER_LIST", "SYSTEM_HISTORY_LIST"]));
    }

    #[test]
    fn explain_names_what_the_ceiling_removed() {
        let user = set(&["CREDENTIAL_ISSUE", "PROOF_ISSUE", "STS_AUDIT_LIST"]);
        let ceiling = Ceiling::new(set(&["CREDENTIAL_ISSUE"]));
        let why = explain(&user, &ceiling);
        assert_eq!(why.granted, set(&["CREDENTIAL_ISSUE"]));
        assert_eq!(why.removed_by_ceiling, set(&["PROOF_ISSUE"]));
    }

    #[test]
    fn permissions_serialise_sorted_without_duplicates() {
        let perms = set(&["PROOF_LIST", "DID_LIST", "PROOF_LIST"]);
        assert_eq!(serde_json::to_string(&perms).ok(), Some(r#"["DID_LIST","PROOF_LIST"]"#.into()));
    }

    fn names() -> impl Strategy<Value = PermissionSet> {
        let pool = prop::sample::select(vec![
            "CREDENTIAL_ISSUE",
            "CREDENTIAL_REVOKE",
            "PROOF_ISSUE",
            "DID_LIST",
            "KEY_CREATE",
            "STS_USER_LIST",
            "STS_AUDIT_LIST",
            "SYSTEM_HISTORY_LIST",
            "STS_ORGANISATION_CREATE",
        ]);
        prop::collection::vec(pool, 0..9).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn org_token_is_exactly_the_intersection(user in names(), raw_ceiling in names()) {
            let ceiling = Ceiling::new(raw_ceiling);
            let granted = organisation_token_permissions(&user, &ceiling);
            prop_assert!(granted.is_subset(&user));
            prop_assert!(granted.is_subset(ceiling.permissions()));
            prop_assert!(granted.iter().all(|p| !is_system_scoped(p)));
            for p in user.iter() {
                prop_assert_eq!(granted.contains(p), ceiling.permissions().contains(p));
            }
        }

        #[test]
        fn system_token_is_user_within_system_scope(user in names()) {
            let granted = system_token_permissions(&user);
            prop_assert!(granted.is_subset(&user));
            for p in user.iter() {
                prop_assert_eq!(granted.contains(p), is_system_scoped(p));
            }
        }
    }
}
