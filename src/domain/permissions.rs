//! Permission sets and the one policy of the product: a token holds exactly
//! what the user may do within what the organisation allows.

use std::sync::LazyLock;

use serde::Serialize;
use serde::ser::SerializeSeq;

/// Core's permission vocabulary (`config/permissions.txt`, from
/// `../shared/permissions.txt`), embedded.
pub const CORE_VOCABULARY: &str = include_str!("../../config/permissions.txt");

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

/// Words of a [`PermissionSet`]: room for 256 names (the vocabulary has 105).
const WORDS: usize = 4;

/// Every name a permission set can hold, sorted: Core's vocabulary and the
/// STS's own. Bit `i` of a set stands for `NAMES[i]`, so a set's bits in
/// order are its names in order.
static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut names: Vec<&'static str> = CORE_VOCABULARY
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .chain(STS_OWN_PERMISSIONS)
        .collect();
    names.sort_unstable();
    names.dedup();
    names.truncate(WORDS * 64);
    names
});

/// The system-scoped names as a set, for one `AND` per system token.
static SYSTEM_SCOPED: LazyLock<PermissionSet> =
    LazyLock::new(|| NAMES.iter().copied().filter(|name| is_system_scoped(name)).collect());

fn index_of(name: &str) -> Option<usize> {
    NAMES.binary_search(&name).ok()
}

/// A set of permissions, as a bitset over the vocabulary ([`NAMES`]):
/// union, intersection and the scope filters are a few word operations, and
/// building one allocates nothing. It iterates sorted and free of
/// duplicates, the order the `permissions` claim needs. A name outside the
/// vocabulary cannot be held (the role catalogue refuses such names at
/// start; elsewhere dropping one can only take a permission away).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct PermissionSet([u64; WORDS]);

impl PermissionSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, permission: &str) -> bool {
        index_of(permission).is_some_and(|i| self.0[i / 64] & (1 << (i % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        NAMES.iter().enumerate().filter(|(i, _)| self.0[i / 64] & (1 << (i % 64)) != 0).map(|(_, name)| *name)
    }

    /// Adds a name of the vocabulary; returns false (and adds nothing) for
    /// any other name.
    pub fn insert(&mut self, permission: &str) -> bool {
        let Some(i) = index_of(permission) else { return false };
        self.0[i / 64] |= 1 << (i % 64);
        true
    }

    fn combine(&self, other: &PermissionSet, op: impl Fn(u64, u64) -> u64) -> PermissionSet {
        let mut words = [0; WORDS];
        for (i, word) in words.iter_mut().enumerate() {
            *word = op(self.0[i], other.0[i]);
        }
        Self(words)
    }

    pub fn extend(&mut self, other: &PermissionSet) {
        *self = self.combine(other, |a, b| a | b);
    }

    pub fn intersection(&self, other: &PermissionSet) -> PermissionSet {
        self.combine(other, |a, b| a & b)
    }

    pub fn difference(&self, other: &PermissionSet) -> PermissionSet {
        self.combine(other, |a, b| a & !b)
    }

    pub fn is_subset(&self, other: &PermissionSet) -> bool {
        self.difference(other).is_empty()
    }

    /// Only the system-scoped members.
    pub fn system_scoped(&self) -> PermissionSet {
        self.intersection(&SYSTEM_SCOPED)
    }

    /// Only the organisation-scoped members.
    pub fn organisation_scoped(&self) -> PermissionSet {
        self.difference(&SYSTEM_SCOPED)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl std::fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for PermissionSet {
    /// A sorted list of names.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for name in self.iter() {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

impl<S: AsRef<str>> FromIterator<S> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut set = Self::new();
        for name in iter {
            set.insert(name.as_ref());
        }
        set
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
        user_permissions: *user,
        ceiling: ceiling.0,
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
    fn the_vocabulary_fits_and_every_name_round_trips() {
        assert!(NAMES.len() < WORDS * 64, "room for the vocabulary to grow: raise WORDS before it is full");
        assert!(NAMES.len() >= STS_OWN_PERMISSIONS.len() + 90);
        let all: PermissionSet = NAMES.iter().collect();
        assert_eq!(all.len(), NAMES.len());
        assert_eq!(all.iter().collect::<Vec<_>>(), *NAMES);
    }

    #[test]
    fn a_name_outside_the_vocabulary_is_not_held() {
        let mut set = set(&["DID_LIST"]);
        assert!(!set.insert("NOT_A_PERMISSION"));
        assert!(!set.contains("NOT_A_PERMISSION"));
        assert_eq!(set.to_vec(), vec!["DID_LIST".to_owned()]);
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
