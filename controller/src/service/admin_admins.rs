//! Admin calls about admin credentials: create (the credential is shown once), list,
//! revoke. The last credential in force cannot be revoked (nobody could log in again).

use nex_backup_shared::ids::validate_name;
use nex_backup_shared::pb;
use tonic::Status;

use super::admin::AdminApi;
use super::{bad_input, catalog_status, now_ms};
use crate::admins::{new_admin_token, token_hash_hex};
use crate::catalog::trust::AdminRecord;

fn info(a: &AdminRecord) -> pb::AdminInfo {
    pb::AdminInfo {
        name: a.name.clone(),
        created_unix_ms: a.created_unix_ms,
        revoked_unix_ms: a.revoked_unix_ms.unwrap_or(0),
    }
}

impl AdminApi {
    pub(super) async fn create_admin_impl(
        &self,
        r: pb::CreateAdminRequest,
    ) -> Result<pb::CreateAdminResponse, Status> {
        validate_name("admin", &r.name).map_err(bad_input)?;
        let cat = &self.state.catalog;
        let all = cat.admins().await.map_err(catalog_status)?;
        if all.iter().any(|a| a.name == r.name) {
            return Err(Status::already_exists(format!(
                "an admin credential named {} exists (names are never reused, so the log stays unambiguous)",
                r.name
            )));
        }
        let token = new_admin_token();
        let rec = AdminRecord {
            v: 1,
            name: r.name.clone(),
            hash: token_hash_hex(&token),
            created_unix_ms: now_ms(),
            revoked_unix_ms: None,
        };
        cat.put_admin(&rec).await.map_err(catalog_status)?;
        self.audit("", "", "admin credential created", rec.name.clone())
            .await?;
        self.state
            .admins
            .load(&cat.admins().await.map_err(catalog_status)?);
        Ok(pb::CreateAdminResponse {
            name: rec.name,
            token,
        })
    }

    pub(super) async fn list_admins_impl(&self) -> Result<pb::ListAdminsResponse, Status> {
        let all = self.state.catalog.admins().await.map_err(catalog_status)?;
        Ok(pb::ListAdminsResponse {
            admins: all.iter().map(info).collect(),
        })
    }

    pub(super) async fn revoke_admin_impl(
        &self,
        r: pb::RevokeAdminRequest,
    ) -> Result<pb::AdminInfo, Status> {
        validate_name("admin", &r.name).map_err(bad_input)?;
        let cat = &self.state.catalog;
        let all = cat.admins().await.map_err(catalog_status)?;
        let Some(mut rec) = all.iter().find(|a| a.name == r.name).cloned() else {
            return Err(Status::not_found(format!(
                "no admin credential named {} (nex-backup admin list)",
                r.name
            )));
        };
        if rec.revoked_unix_ms.is_some() {
            return Ok(info(&rec));
        }
        if all.iter().filter(|a| a.revoked_unix_ms.is_none()).count() <= 1 {
            return Err(Status::failed_precondition(format!(
                "{} is the last admin credential in force; create another first (nex-backup admin create NAME)",
                r.name
            )));
        }
        rec.revoked_unix_ms = Some(now_ms());
        cat.put_admin(&rec).await.map_err(catalog_status)?;
        self.audit("", "", "admin credential revoked", rec.name.clone())
            .await?;
        self.state
            .admins
            .load(&cat.admins().await.map_err(catalog_status)?);
        Ok(info(&rec))
    }
}
