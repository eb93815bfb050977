//! Table definitions, written by hand because the column types are our own
//! per-backend types (see `types.rs`), which `diesel print-schema` cannot know.

diesel::table! {
    use diesel::sql_types::{Nullable, Text};
    use crate::store::types::{SqlNames, SqlTime, SqlUuid};

    organisations (id) {
        id -> SqlUuid,
        name -> Text,
        name_key -> Text,
        roles -> SqlNames,
        created_at -> SqlTime,
        last_modified -> SqlTime,
        deactivated_at -> Nullable<SqlTime>,
    }
}

diesel::table! {
    use diesel::sql_types::{Integer, Nullable, Text};
    use crate::store::types::{SqlNames, SqlTime, SqlUuid};

    users (id) {
        id -> SqlUuid,
        username -> Text,
        username_key -> Text,
        kind -> Text,
        password_hash -> Nullable<Text>,
        secret_digest -> Nullable<Text>,
        system_roles -> SqlNames,
        created_at -> SqlTime,
        last_modified -> SqlTime,
        disabled_at -> Nullable<SqlTime>,
        failed_logins -> Integer,
        last_failed_at -> Nullable<SqlTime>,
        throttled_until -> Nullable<SqlTime>,
    }
}

diesel::table! {
    use crate::store::types::{SqlTime, SqlUuid};

    memberships (organisation_id, user_id) {
        organisation_id -> SqlUuid,
        user_id -> SqlUuid,
        created_at -> SqlTime,
    }
}

diesel::table! {
    use diesel::sql_types::{Nullable, Text};
    use crate::store::types::{SqlTime, SqlUuid};

    refresh_tokens (id) {
        id -> SqlUuid,
        digest -> Text,
        family_id -> SqlUuid,
        user_id -> SqlUuid,
        organisation_id -> Nullable<SqlUuid>,
        issued_at -> SqlTime,
        expires_at -> SqlTime,
        family_expires_at -> SqlTime,
        consumed_at -> Nullable<SqlTime>,
        revoked_at -> Nullable<SqlTime>,
    }
}

diesel::table! {
    use diesel::sql_types::{Nullable, Text};
    use crate::store::types::{SqlTime, SqlUuid};

    audit_events (id) {
        id -> SqlUuid,
        created_at -> SqlTime,
        action -> Text,
        outcome -> Text,
        subject -> Nullable<Text>,
        actor -> Nullable<Text>,
        organisation_id -> Nullable<SqlUuid>,
        target_id -> Nullable<Text>,
        request_id -> Nullable<Text>,
        source_ip -> Nullable<Text>,
        reason -> Nullable<Text>,
    }
}

diesel::joinable!(memberships -> organisations (organisation_id));
diesel::joinable!(memberships -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(organisations, users, memberships, refresh_tokens, audit_events);
