//! Typed ids, validated once where text enters (`TryFrom<&str>` / `TryFrom<String>`):
//! a [`SiteId`], [`TargetName`], [`AgentId`], [`SnapshotId`] or [`JobId`] that exists is
//! well formed. Each derefs to `str`, so code that only reads it takes `&str`.

use std::fmt;
use std::ops::Deref;

use crate::error::FormatError;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = FormatError;
            fn try_from(s: &str) -> Result<Self, FormatError> {
                let check: fn(&str) -> Result<(), FormatError> = $check;
                check(s)?;
                Ok($name(s.to_string()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = FormatError;
            fn try_from(s: String) -> Result<Self, FormatError> {
                let check: fn(&str) -> Result<(), FormatError> = $check;
                check(&s)?;
                Ok($name(s))
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

typed_id!(
    /// A customer site, e.g. `acme`.
    SiteId,
    |s| super::validate_name("site", s)
);
typed_id!(
    /// A target of a site (a database or a file set), e.g. `invoices`.
    TargetName,
    |s| super::validate_name("target", s)
);
typed_id!(
    /// An agent of a site, e.g. `acme-db1`.
    AgentId,
    |s| super::validate_name("agent id", s)
);
typed_id!(
    /// A snapshot: `YYYYMMDDTHHMMSSZ-<8 hex>`.
    SnapshotId,
    super::validate_snapshot_id
);
typed_id!(
    /// A job: `job-` and a snapshot-shaped suffix.
    JobId,
    |s| match s.strip_prefix("job-") {
        Some(rest) => super::validate_snapshot_id(rest)
            .map_err(|_| FormatError::invalid("job id", format!("{s:?} is malformed"))),
        None => Err(FormatError::invalid("job id", format!("{s:?} is malformed"))),
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_once_where_they_enter() {
        assert_eq!(SiteId::try_from("acme").unwrap().as_str(), "acme");
        assert!(SiteId::try_from("../etc").is_err());
        assert!(TargetName::try_from(String::new()).is_err());
        let snap = crate::ids::new_snapshot_id(1_796_000_000_000);
        assert_eq!(&*SnapshotId::try_from(snap.as_str()).unwrap(), snap);
        assert!(SnapshotId::try_from("2026").is_err());
        assert!(JobId::try_from(format!("job-{snap}")).is_ok());
        assert!(JobId::try_from("job-nope").is_err());
        assert!(
            AgentId::try_from("a b")
                .unwrap_err()
                .to_string()
                .contains("agent id")
        );
    }
}
