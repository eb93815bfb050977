//! Column types that are native on each backend behind one Rust type:
//! `uuid`, `timestamptz` and `jsonb` on PostgreSQL, text on SQLite.
//!
//! Each newtype delegates to the backend's own implementation.

use chrono::{DateTime, SubsecRound, Utc};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types;
use diesel::sqlite::Sqlite;
use diesel::{QueryId, SqlType};
use uuid::Uuid;

/// `uuid` on PostgreSQL, canonical lowercase text on SQLite.
#[derive(Debug, Clone, Copy, SqlType, QueryId)]
#[diesel(postgres_type(oid = 2950, array_oid = 2951))]
#[diesel(sqlite_type(name = "Text"))]
pub struct SqlUuid;

/// `timestamptz` on PostgreSQL; on SQLite fixed-width RFC 3339 text in UTC
/// with microseconds, so that text order is time order.
#[derive(Debug, Clone, Copy, SqlType, QueryId)]
#[diesel(postgres_type(oid = 1184, array_oid = 1185))]
#[diesel(sqlite_type(name = "Text"))]
pub struct SqlTime;

/// `jsonb` on PostgreSQL, JSON text on SQLite; holds a list of names.
#[derive(Debug, Clone, Copy, SqlType, QueryId)]
#[diesel(postgres_type(oid = 3802, array_oid = 3807))]
#[diesel(sqlite_type(name = "Text"))]
pub struct SqlNames;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = SqlUuid)]
pub struct DbUuid(pub Uuid);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, AsExpression, FromSqlRow)]
#[diesel(sql_type = SqlTime)]
pub struct DbTime(pub DateTime<Utc>);

#[derive(Debug, Clone, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = SqlNames)]
pub struct DbNames(pub Vec<String>);

impl From<Uuid> for DbUuid {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl From<DateTime<Utc>> for DbTime {
    /// Both backends keep microseconds; truncating here makes a value read
    /// back equal to the value written.
    fn from(time: DateTime<Utc>) -> Self {
        Self(time.trunc_subsecs(6))
    }
}

const SQLITE_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Formats a time the way SQLite columns store it.
fn sqlite_time_text(time: DateTime<Utc>) -> String {
    time.format(SQLITE_TIME_FORMAT).to_string()
}

// --- PostgreSQL: delegate to diesel's native implementations -------------

impl ToSql<SqlUuid, Pg> for DbUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <Uuid as ToSql<sql_types::Uuid, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<SqlUuid, Pg> for DbUuid {
    fn from_sql(bytes: <Pg as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        <Uuid as FromSql<sql_types::Uuid, Pg>>::from_sql(bytes).map(Self)
    }
}

impl ToSql<SqlTime, Pg> for DbTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <DateTime<Utc> as ToSql<sql_types::Timestamptz, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<SqlTime, Pg> for DbTime {
    fn from_sql(bytes: <Pg as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        <DateTime<Utc> as FromSql<sql_types::Timestamptz, Pg>>::from_sql(bytes).map(Self)
    }
}

impl ToSql<SqlNames, Pg> for DbNames {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        let value = serde_json::Value::from(self.0.clone());
        <serde_json::Value as ToSql<sql_types::Jsonb, Pg>>::to_sql(&value, &mut out.reborrow())
    }
}

impl FromSql<SqlNames, Pg> for DbNames {
    fn from_sql(bytes: <Pg as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        let value = <serde_json::Value as FromSql<sql_types::Jsonb, Pg>>::from_sql(bytes)?;
        Ok(Self(serde_json::from_value(value)?))
    }
}

// --- SQLite: text ----------------------------------------------------------

impl ToSql<SqlUuid, Sqlite> for DbUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.hyphenated().to_string());
        Ok(IsNull::No)
    }
}

impl FromSql<SqlUuid, Sqlite> for DbUuid {
    fn from_sql(bytes: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<sql_types::Text, Sqlite>>::from_sql(bytes)?;
        Ok(Self(Uuid::parse_str(&text)?))
    }
}

impl ToSql<SqlTime, Sqlite> for DbTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(sqlite_time_text(self.0));
        Ok(IsNull::No)
    }
}

impl FromSql<SqlTime, Sqlite> for DbTime {
    fn from_sql(bytes: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<sql_types::Text, Sqlite>>::from_sql(bytes)?;
        Ok(Self(DateTime::parse_from_rfc3339(&text)?.with_timezone(&Utc)))
    }
}

impl ToSql<SqlNames, Sqlite> for DbNames {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(serde_json::to_string(&self.0)?);
        Ok(IsNull::No)
    }
}

impl FromSql<SqlNames, Sqlite> for DbNames {
    fn from_sql(bytes: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<sql_types::Text, Sqlite>>::from_sql(bytes)?;
        Ok(Self(serde_json::from_str(&text)?))
    }
}
