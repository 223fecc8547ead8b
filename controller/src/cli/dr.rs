//! `nex-backup restore-controller`: a new controller data dir from a copy of the blob
//! store and a recovery key (`controller/src/dr/`).

use std::process::ExitCode;

use clap::Args;

use super::format::time;

#[derive(Debug, Args)]
pub struct RestoreControllerArgs {
    /// The copy of the blob store (the old controller's `blobs` directory or its data dir).
    #[arg(long)]
    pub store: std::path::PathBuf,
    /// A recovery private key file (`nex-backup recovery-key create`).
    #[arg(long)]
    pub recovery_key: std::path::PathBuf,
    /// The new data dir to build (must not exist or be empty).
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
}

/// `nex-backup restore-controller`: rebuild a controller from its store alone.
pub async fn restore_controller(a: RestoreControllerArgs) -> anyhow::Result<ExitCode> {
    let secret = nex_backup_shared::recovery::RecoverySecret::read_file(&a.recovery_key)?;
    let r = crate::dr::rebuild::restore_controller(&a.store, &secret, &a.data_dir).await?;
    let made = time(r.copy_made_unix_ms);
    println!(
        "restored the controller state copy {} (made {made}) into {}",
        r.copy_key,
        a.data_dir.display()
    );
    println!(
        "rebuilt from the store: {} site(s), {} snapshot(s), {} chunk(s){}",
        r.sites,
        r.snapshots,
        r.chunks,
        if r.without_job > 0 {
            format!(
                "; {} snapshot(s) taken after the copy were given a recovered job record",
                r.without_job
            )
        } else {
            String::new()
        }
    );
    println!(
        "start it with the same address and recovery keys as before, e.g.\n  nex-backup serve --data-dir {} --listen ADDR --recovery-key nexb-rk1:...\n\
         agents enrolled before {made} reconnect with their certificates",
        a.data_dir.display()
    );
    println!("NOT recovered:");
    for line in [
        format!("job history, audit entries, policy and channel changes after {made}"),
        "RPO history (`rpo --days`), incidents and notices, unused enrollment tokens".into(),
        format!("agents enrolled after {made}: enroll them again"),
        "the checksums recorded at upload: chunks were re-recorded as the store holds them now; \
         run `nex-backup verify --deep` on the snapshots you rely on"
            .into(),
    ]
    .into_iter()
    .chain(r.lost.iter().cloned())
    {
        println!("  - {line}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The stopped embedded controller's data dir (its catalog and blobs are read, never
    /// changed).
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    /// The PostgreSQL catalog to move to (an empty database), e.g.
    /// postgres://nex:PASSWORD@db.example:5432/nexbackup
    #[arg(long, env = "NEX_CATALOG", hide_env_values = true)]
    pub to_catalog: String,
    /// The object store to move the blobs to, e.g. s3://bucket/prefix?endpoint=...
    #[arg(long)]
    pub to_store: String,
    /// Where the blobs are now, if not under --data-dir (the old `serve --store`).
    #[arg(long)]
    pub from_store: Option<String>,
}

/// `nex-backup migrate`: move an embedded controller to PostgreSQL and an object store.
pub async fn migrate(a: MigrateArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let from = crate::catalog::sled_catalog::SledCatalog::open(&a.data_dir.join("catalog"))
        .with_context(|| {
            format!(
                "open the catalog in {} (stop the controller first: a running one holds it)",
                a.data_dir.display()
            )
        })?;
    let from_store: std::sync::Arc<dyn crate::store::BlobStore> = match &a.from_store {
        Some(url) => crate::store::url::open(url)?,
        None => std::sync::Arc::new(crate::store::fs::FsStore::open(&a.data_dir.join("blobs"))?),
    };
    let (to_store, _) =
        crate::store::layers::stack(crate::store::url::open(&a.to_store)?, &Default::default());
    let to = crate::catalog::pg::PgCatalog::connect(&a.to_catalog).await?;
    let sides = crate::dr::migrate::Sides {
        from,
        from_store,
        to,
        to_store,
    };
    let r = crate::dr::migrate::migrate(&sides).await?;
    println!(
        "moved {} site(s): {} snapshot(s), {} chunk(s) ({} bytes, each read back), {} job(s), {} agent(s)",
        r.sites, r.snapshots, r.chunks, r.bytes, r.jobs, r.agents
    );
    println!(
        "start the controller on them with the same data dir (its CA and admin credentials):\n  nex-backup serve --data-dir {} --catalog postgres://... --store {}\n\
         the old catalog and blobs under {} were left as they are; remove them once restores from the new setup are verified",
        a.data_dir.display(),
        a.to_store.split('?').next().unwrap_or(&a.to_store),
        a.data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
