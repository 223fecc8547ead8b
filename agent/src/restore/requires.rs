//! The roles and tablespaces a database archive names, checked against the server
//! before anything is restored.
//!
//! A restore onto a new server (the customer's is gone) meets a cluster without the
//! roles that owned the objects or held their privileges, and often without the
//! tablespaces they lived in. `pg_restore` then fails on the first `ALTER ... OWNER TO`
//! or `SET default_tablespace` of the schema, or, for a grant, only after every table is
//! loaded (grants come last). The TOC names them all: each entry's owner and tablespace,
//! and the `GRANT`/`REVOKE` statements of its ACL entries. They are checked once the
//! TOC is read (before the database is created), and a restore that would fail says at
//! once what is missing and what to do: `--globals` to create the roles from the
//! snapshot, `--no-owner`, `--no-privileges` and `--no-tablespaces` to restore without
//! them. A drill leaves out what is missing instead, and says so.

use std::collections::BTreeSet;

use nex_backup_shared::pb;

use crate::error::AgentError;
use crate::pgarchive::Entry;

/// What an archive names: owners, grantees of its privileges, and tablespaces.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Referenced {
    pub owners: BTreeSet<String>,
    pub grantees: BTreeSet<String>,
    pub tablespaces: BTreeSet<String>,
}

/// Role words of GRANT/REVOKE that are no role of the catalog.
const PSEUDO: [&str; 4] = ["public", "current_user", "session_user", "current_role"];

impl Referenced {
    pub fn of(entries: &[Entry]) -> Referenced {
        let mut r = Referenced::default();
        for e in entries {
            if !e.owner.is_empty() {
                r.owners.insert(e.owner.clone());
            }
            if !e.tablespace.is_empty() {
                r.tablespaces.insert(e.tablespace.clone());
            }
            if e.desc == "ACL" || e.desc == "DEFAULT ACL" {
                r.grantees.extend(grantees(&e.defn));
            }
        }
        r
    }

    /// The roles that must exist, given what the restore leaves out.
    fn needed(&self, no_owner: bool, no_privileges: bool) -> BTreeSet<&str> {
        let owners = self.owners.iter().filter(|_| !no_owner);
        let grantees = self.grantees.iter().filter(|_| !no_privileges);
        owners.chain(grantees).map(String::as_str).collect()
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Ident(String),
    Comma,
    Other,
}

/// Split SQL into words (lowercased), identifiers (double-quoted, unescaped), commas and
/// the rest; string literals are skipped.
fn tokens(sql: &str) -> Vec<Token> {
    let mut out = vec![];
    let mut it = sql.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '"' | '\'' => {
                let mut s = String::new();
                while let Some(d) = it.next() {
                    if d == c {
                        if it.peek() == Some(&c) {
                            it.next();
                        } else {
                            break;
                        }
                    }
                    s.push(d);
                }
                out.push(if c == '"' {
                    Token::Ident(s)
                } else {
                    Token::Other
                });
            }
            ',' => out.push(Token::Comma),
            c if c.is_alphanumeric() || c == '_' => {
                let mut s = c.to_lowercase().to_string();
                while let Some(&d) = it.peek() {
                    if !(d.is_alphanumeric() || d == '_' || d == '$') {
                        break;
                    }
                    s.extend(d.to_lowercase());
                    it.next();
                }
                out.push(Token::Word(s));
            }
            c if c.is_whitespace() => {}
            _ => out.push(Token::Other),
        }
    }
    out
}

/// The roles of `GRANT ... TO a, b`, `REVOKE ... FROM a`, `... FOR ROLE a` and
/// `SET SESSION AUTHORIZATION a` (a grant by another role than the owner).
fn grantees(defn: &str) -> Vec<String> {
    let toks = tokens(defn);
    let mut out = vec![];
    let mut i = 0;
    while i < toks.len() {
        let starts_list = match &toks[i] {
            Token::Word(w) if w == "to" || w == "from" || w == "authorization" => true,
            Token::Word(w) if w == "for" => {
                matches!(toks.get(i + 1), Some(Token::Word(r)) if r == "role" || r == "user") && {
                    i += 1;
                    true
                }
            }
            _ => false,
        };
        i += 1;
        if !starts_list {
            continue;
        }
        while let Some(t) = toks.get(i) {
            match t {
                Token::Ident(name) => out.push(name.clone()),
                Token::Word(w) if w == "group" => {
                    i += 1;
                    continue;
                }
                Token::Word(w) if !PSEUDO.contains(&w.as_str()) => out.push(w.clone()),
                Token::Word(_) => {}
                _ => break,
            }
            i += 1;
            if toks.get(i) != Some(&Token::Comma) {
                break;
            }
            i += 1;
        }
    }
    out
}

/// What the server lacks of what a restore would use (each list quoted names).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Missing {
    pub owners: Vec<String>,
    pub grantees: Vec<String>,
    pub tablespaces: Vec<String>,
}

impl Missing {
    /// `owners "a"; tablespaces "t"`.
    pub fn list(&self) -> String {
        let lists = [
            ("owners", &self.owners),
            ("grantees", &self.grantees),
            ("tablespaces", &self.tablespaces),
        ];
        let what: Vec<String> = (lists.iter())
            .filter(|(_, names)| !names.is_empty())
            .map(|(kind, names)| format!("{kind} {}", names.join(", ")))
            .collect();
        what.join("; ")
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the snapshot names roles or tablespaces this server does not have ({}); restore \
             with --globals to create the roles from the snapshot first, or without them: \
             --no-owner (owners), --no-privileges (grants), --no-tablespaces (tablespaces)",
            self.list()
        )
    }
}

/// What the restore `cmd` needs (given what it leaves out) that the server lacks: a
/// role it would give an object to or grant a privilege to, a tablespace it would
/// create one in. `None` if nothing.
pub async fn missing(
    client: &tokio_postgres::Client,
    refs: &Referenced,
    cmd: &pb::RestoreCommand,
) -> Result<Option<Missing>, AgentError> {
    let roles: Vec<&str> = (refs.needed(cmd.no_owner, cmd.no_privileges).into_iter()).collect();
    let present_roles = present(client, "pg_roles", "rolname", &roles).await?;
    let spaces: Vec<&str> = (refs.tablespaces.iter())
        .filter(|_| !cmd.no_tablespaces)
        .map(String::as_str)
        .collect();
    let present_spaces = present(client, "pg_tablespace", "spcname", &spaces).await?;
    let lacking = |set: &BTreeSet<String>, skip: bool, present: &BTreeSet<String>| {
        (set.iter())
            .filter(|r| !skip && !present.contains(*r))
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
    };
    let m = Missing {
        owners: lacking(&refs.owners, cmd.no_owner, &present_roles),
        grantees: lacking(&refs.grantees, cmd.no_privileges, &present_roles),
        tablespaces: lacking(&refs.tablespaces, cmd.no_tablespaces, &present_spaces),
    };
    Ok((m != Missing::default()).then_some(m))
}

/// For a drill, which checks the data: leave out what the server lacks instead of
/// failing (as a drill by a role that is not a superuser already does for owners).
pub fn leave_out(cmd: &mut pb::RestoreCommand, m: &Missing) {
    cmd.no_owner |= !m.owners.is_empty();
    cmd.no_privileges |= !m.grantees.is_empty();
    cmd.no_tablespaces |= !m.tablespaces.is_empty();
}

/// Which of `names` the catalog table `table` holds in its column `column`.
async fn present(
    client: &tokio_postgres::Client,
    table: &str,
    column: &str,
    names: &[&str],
) -> Result<BTreeSet<String>, AgentError> {
    if names.is_empty() {
        return Ok(BTreeSet::new());
    }
    let sql = format!("SELECT {column}::text FROM pg_catalog.{table} WHERE {column} = ANY($1)");
    let rows = client.query(&sql, &[&names]).await.map_err(|e| {
        format!(
            "look up the snapshot's {table}: {}",
            crate::pg::db_error_text(&e)
        )
    })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Say what to do when `pg_restore` failed on a missing role or tablespace (a restore
/// whose TOC the agent did not read).
pub fn hint(e: AgentError) -> AgentError {
    let text = e.to_string();
    let lower = text.to_lowercase();
    let missing = |what: &str| lower.contains(what) && lower.contains("does not exist");
    if missing("error:  role \"") {
        return format!(
            "{text} (the server lacks a role the snapshot names: restore with --globals to \
             create the snapshot's roles, or with --no-owner and --no-privileges)"
        )
        .into();
    }
    if missing("tablespace \"") {
        return format!(
            "{text} (the server lacks a tablespace the snapshot names: restore with \
             --no-tablespaces to create everything in the default one)"
        )
        .into();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(desc: &str, owner: &str, defn: &str) -> Entry {
        Entry {
            dump_id: 1,
            had_dumper: false,
            tag: "t".into(),
            desc: desc.into(),
            section: 2,
            defn: defn.into(),
            copy_stmt: None,
            namespace: "public".into(),
            owner: owner.into(),
            tablespace: if desc == "TABLE" {
                "fast".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn owners_and_grantees_of_acl_entries() {
        let entries = [
            entry("TABLE", "app", "CREATE TABLE public.t (x int);"),
            entry("SCHEMA", "", "CREATE SCHEMA s;"),
            entry(
                "ACL",
                "app",
                "REVOKE ALL ON SCHEMA public FROM PUBLIC;\nGRANT SELECT ON TABLE public.t TO viewer;\n\
                 GRANT SELECT(\"to\"),UPDATE ON TABLE \"from\".\"t o\" TO \"Odd \"\"Role\", CURRENT_USER WITH GRANT OPTION;\n\
                 GRANT ALL ON FUNCTION public.f(a integer, b text) TO GROUP staff;\n\
                 SET SESSION AUTHORIZATION boss;\nGRANT SELECT ON TABLE public.t TO clerk;\nRESET SESSION AUTHORIZATION;",
            ),
            entry(
                "DEFAULT ACL",
                "app",
                "ALTER DEFAULT PRIVILEGES FOR ROLE app2 IN SCHEMA public GRANT SELECT ON TABLES TO reader;",
            ),
            // Not an ACL entry: its text is not read for roles.
            entry(
                "POLICY",
                "app",
                "CREATE POLICY p ON public.t TO ghost USING (extract(year FROM d) > 2000);",
            ),
        ];
        let r = Referenced::of(&entries);
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(r.owners, set(&["app"]));
        assert_eq!(r.tablespaces, set(&["fast"]));
        assert_eq!(
            r.grantees,
            set(&[
                "viewer",
                "Odd \"Role",
                "staff",
                "boss",
                "clerk",
                "app2",
                "reader"
            ])
        );
        assert_eq!(r.needed(true, true), BTreeSet::new());
        assert_eq!(r.needed(false, true), ["app"].into_iter().collect());
    }

    #[test]
    fn a_missing_role_error_gets_a_hint() {
        let e =
            AgentError::from("pg_restore failed: ERROR:  role \"app\" does not exist".to_string());
        assert!(hint(e).to_string().contains("--globals"));
        let other = AgentError::from("pg_restore failed: disk full".to_string());
        assert!(!hint(other).to_string().contains("--globals"));
    }
}
