//! One controller CA for every replica: agents and the CLI pin its fingerprint, so any
//! replica can serve them. The first replica to start publishes its CA (certificate and
//! key) in the shared catalog; the others import it into their data dir before they
//! would create one. Each replica keeps a server certificate of its own, for its own
//! host names, signed by that CA. The catalog database then holds the CA key: protect
//! it as the controller's data dir.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::catalog::pg::{PgCatalog, pg_err};

#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct SharedCa {
    crt: String,
    key: String,
}

fn paths(data_dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = data_dir.join("pki");
    (dir.join("ca.crt"), dir.join("ca.key"))
}

/// Before the PKI is loaded: take the shared CA if there is one. A data dir with a CA of
/// its own that differs is refused (it would split the fleet's trust).
pub async fn import(pg: &PgCatalog, data_dir: &Path) -> anyhow::Result<()> {
    let Some(shared) = pg.get_doc::<SharedCa>("meta", "ca").await? else {
        return Ok(());
    };
    let (crt, key) = paths(data_dir);
    if crt.exists() {
        let local =
            std::fs::read_to_string(&crt).with_context(|| format!("read {}", crt.display()))?;
        if local.trim() != shared.crt.trim() {
            bail!(
                "{} is not the CA the other replicas use (the one in the shared catalog); move {} away to import the shared one",
                crt.display(),
                data_dir.join("pki").display()
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(data_dir.join("pki"))?;
    nex_backup_shared::keyring::write_private_file(&key, shared.key.as_bytes())
        .with_context(|| format!("write {}", key.display()))?;
    nex_backup_shared::keyring::write_private_file(&crt, shared.crt.as_bytes())
        .with_context(|| format!("write {}", crt.display()))?;
    tracing::info!(path = %crt.display(), "imported the controller CA from the shared catalog");
    Ok(())
}

/// After the PKI is loaded: publish this CA if no replica has. Two first replicas
/// starting at once: one wins, the other stops with a message to start it again.
pub async fn publish(pg: &PgCatalog, data_dir: &Path) -> anyhow::Result<()> {
    let (crt, key) = paths(data_dir);
    let ours = SharedCa {
        crt: std::fs::read_to_string(&crt).with_context(|| format!("read {}", crt.display()))?,
        key: std::fs::read_to_string(&key).with_context(|| format!("read {}", key.display()))?,
    };
    let c = pg.client().await?;
    c.execute(
        "INSERT INTO docs (kind, k, site, rec) VALUES ('meta', 'ca', NULL, $1)
         ON CONFLICT DO NOTHING",
        &[&serde_json::to_value(&ours)?],
    )
    .await
    .map_err(pg_err)?;
    let stored: SharedCa = pg
        .get_doc("meta", "ca")
        .await?
        .context("the shared CA vanished from the catalog")?;
    if stored.crt.trim() != ours.crt.trim() {
        bail!(
            "another replica published a different CA first; move {} away and start this replica again to import it",
            data_dir.join("pki").display()
        );
    }
    Ok(())
}
