//! Admin calls about dashboard accounts: create or change one (role, customer sites,
//! password, disabled, lockout), and list them. Passwords are hashed here (argon2id)
//! and never stored or logged; a generated one is returned once.

use nex_backup_shared::ids::validate_name;
use nex_backup_shared::pb;
use tonic::Status;

use super::admin::AdminApi;
use super::{bad_input, catalog_status, now_ms};
use crate::accounts::{check_password, hash_password, new_password};
use crate::catalog::trust::{AccountRecord, Role};

fn info(a: &AccountRecord) -> pb::AccountInfo {
    pb::AccountInfo {
        name: a.name.clone(),
        role: a.role.name().into(),
        sites: a.sites.clone(),
        created_unix_ms: a.created_unix_ms,
        disabled_unix_ms: a.disabled_unix_ms.unwrap_or(0),
        locked_until_unix_ms: a.locked_until_unix_ms,
        password: String::new(),
        totp: a.totp_secret.is_some(),
        totp_url: String::new(),
    }
}

async fn hashed(pw: String) -> Result<String, Status> {
    check_password(&pw).map_err(|e| Status::invalid_argument(e.to_string()))?;
    tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))
}

/// Apply the request's role and sites to `rec`, checking that they fit together.
fn apply_role(rec: &mut AccountRecord, r: &pb::SetAccountRequest) -> Result<(), Status> {
    if !r.role.is_empty() {
        rec.role = Role::parse(&r.role).ok_or_else(|| {
            Status::invalid_argument(format!(
                "--role {:?}: use admin, operator, viewer or customer",
                r.role
            ))
        })?;
    }
    if r.set_sites {
        for s in &r.sites {
            validate_name("site", s).map_err(bad_input)?;
        }
        rec.sites = r.sites.clone();
        rec.sites.sort();
        rec.sites.dedup();
    }
    if rec.role != Role::Customer {
        rec.sites.clear();
    } else if rec.sites.is_empty() {
        return Err(Status::invalid_argument(
            "a customer account needs at least one site (--site NAME)",
        ));
    }
    Ok(())
}

impl AdminApi {
    pub(super) async fn set_account_impl(
        &self,
        r: pb::SetAccountRequest,
    ) -> Result<pb::AccountInfo, Status> {
        validate_name("account", &r.name).map_err(bad_input)?;
        let cat = &self.state.catalog;
        let existing = cat.account(&r.name).await.map_err(catalog_status)?;
        let mut rec = match (existing, r.create) {
            (Some(_), true) => {
                return Err(Status::already_exists(format!(
                    "an account named {} exists; change it without --create",
                    r.name
                )));
            }
            (None, false) => {
                return Err(Status::not_found(format!(
                    "no account named {} (nex-backup account list)",
                    r.name
                )));
            }
            (Some(rec), false) => rec,
            (None, true) => AccountRecord {
                v: 1,
                name: r.name.clone(),
                role: Role::Viewer,
                sites: vec![],
                password_hash: String::new(),
                totp_secret: None,
                created_unix_ms: now_ms(),
                disabled_unix_ms: None,
                failed_logins: 0,
                locked_until_unix_ms: 0,
                epoch: 0,
                totp_last_step: 0,
            },
        };
        if r.create && r.role.is_empty() {
            return Err(Status::invalid_argument(
                "a new account needs a role (--role admin|operator|viewer|customer)",
            ));
        }
        apply_role(&mut rec, &r)?;
        let mut shown = String::new();
        if r.new_password || r.create {
            let pw = if r.password.is_empty() {
                shown = new_password();
                shown.clone()
            } else {
                r.password.clone()
            };
            rec.password_hash = hashed(pw).await?;
        }
        if r.disable {
            rec.disabled_unix_ms = Some(now_ms());
        }
        if r.enable {
            rec.disabled_unix_ms = None;
        }
        if r.unlock {
            rec.failed_logins = 0;
            rec.locked_until_unix_ms = 0;
        }
        let mut url = String::new();
        if r.totp_enable {
            let secret = crate::accounts::new_totp_secret();
            url = crate::accounts::totp_url(&secret, &rec.name);
            rec.totp_secret = Some(secret);
            rec.totp_last_step = 0;
        }
        if r.totp_disable {
            rec.totp_secret = None;
        }
        // Every change ends the account's sessions.
        rec.epoch = rec.epoch.wrapping_add(1);
        cat.put_account(&rec).await.map_err(catalog_status)?;
        let mut out = info(&rec);
        out.password = shown;
        out.totp_url = url;
        Ok(out)
    }

    pub(super) async fn list_accounts_impl(&self) -> Result<pb::ListAccountsResponse, Status> {
        let all = self
            .state
            .catalog
            .accounts()
            .await
            .map_err(catalog_status)?;
        Ok(pb::ListAccountsResponse {
            accounts: all.iter().map(info).collect(),
        })
    }
}
