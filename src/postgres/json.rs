//! [`Json`] in `jsonb` columns, as the text PostgreSQL's binary protocol
//! carries (a version byte, `1`, then the document's text), so no number
//! passes through `f64` on its way in or out.

use std::io::Write;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Jsonb;

use crate::model::Json;

/// The only `jsonb` binary format there is.
const JSONB_VERSION: u8 = 1;

impl FromSql<Jsonb, Pg> for Json {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let (&version, text) = value
            .as_bytes()
            .split_first()
            .ok_or("PostgreSQL sent an empty jsonb value")?;
        if version != JSONB_VERSION {
            return Err(format!("unsupported jsonb format version {version}").into());
        }
        let text = std::str::from_utf8(text)?;
        Ok(Json::from_stored(text.to_owned())?)
    }
}

impl ToSql<Jsonb, Pg> for Json {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(&[JSONB_VERSION])?;
        out.write_all(self.as_str().as_bytes())?;
        Ok(IsNull::No)
    }
}
