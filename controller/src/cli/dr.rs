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
