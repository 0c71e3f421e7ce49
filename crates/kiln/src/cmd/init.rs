//! `kiln init DIR`: a new project that `kiln apply` accepts at once.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kiln_core::time::{MICROS_PER_SECOND, now_micros, parse_timestamp};
use kiln_features::example::{DriverStats, write_driver_stats, write_entity_rows};

use super::Ctx;
use crate::config::CONFIG_FILE;

#[derive(clap::Args)]
pub struct InitArgs {
    /// Where to create the project.
    pub dir: PathBuf,
    /// Project name (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// The last hour of the example data (default: the current hour, so the data is fresh
    /// for online reads). Give a fixed time for byte-identical data.
    #[arg(long)]
    pub anchor: Option<String>,
    /// Number of drivers in the example data.
    #[arg(long, default_value_t = 100)]
    pub drivers: u64,
    /// Hours of example data per driver.
    #[arg(long, default_value_t = 48)]
    pub hours: u64,
}

pub const SEED: u64 = 42;

/// What `init` wrote.
pub struct Created {
    pub stats: DriverStats,
    pub rows: u64,
    pub files: Vec<PathBuf>,
}

pub fn run(ctx: &Ctx, a: InitArgs) -> anyhow::Result<()> {
    let created = create(&a)?;
    if ctx.json() {
        crate::output::json(&serde_json::json!({
            "project": a.dir,
            "files": created.files,
            "rows": created.rows,
        }))?;
    } else {
        println!("Created a Kiln project in {}", a.dir.display());
        for f in &created.files {
            println!("  {}", f.strip_prefix(&a.dir).unwrap_or(f).display());
        }
        println!(
            "\nNext:\n  cd {}\n  kiln apply\n  kiln materialize --incremental\n  kiln features get --service driver_activity --entity driver_id=1001\n  kiln serve",
            a.dir.display()
        );
    }
    Ok(())
}

/// Creates the project files; refuses to overwrite an existing project.
pub fn create(a: &InitArgs) -> anyhow::Result<Created> {
    let dir = &a.dir;
    if dir.join(CONFIG_FILE).exists() {
        anyhow::bail!(
            "{} already holds a Kiln project ({CONFIG_FILE} exists); choose another directory",
            dir.display()
        );
    }
    let name = match &a.name {
        Some(n) => n.clone(),
        None => dir
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_")
            })
            .unwrap_or_else(|| "kiln_project".into()),
    };
    let hour = 3_600 * MICROS_PER_SECOND;
    let anchor = match &a.anchor {
        Some(t) => parse_timestamp(t).with_context(|| "--anchor")?,
        None => now_micros(),
    };
    let stats = DriverStats {
        drivers: a.drivers.max(1),
        hours: a.hours.max(1),
        anchor: anchor - anchor.rem_euclid(hour),
        first_id: 1001,
        seed: SEED,
        stale_every: 50,
        stale_hours: 30,
    };
    let write = |rel: &str, text: &str| -> anyhow::Result<PathBuf> {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(p)
    };
    let mut files = vec![
        write(
            CONFIG_FILE,
            &include_str!("../templates/kiln.toml").replace("{{PROJECT}}", &name),
        )?,
        write(
            "features/driver.toml",
            include_str!("../templates/driver.toml"),
        )?,
        write(".gitignore", ".kiln/\n")?,
    ];
    let data = dir.join("data/driver_stats.parquet");
    let rows = write_driver_stats(&data, &stats, |_| {})?;
    files.push(data);
    let entities = dir.join("data/driver_entities.parquet");
    write_entity_rows(&entities, 1_000, &stats, |_| {})?;
    files.push(entities);
    Ok(Created { stats, rows, files })
}

/// For the demo: a project in `dir` with `drivers` x `hours` rows ending at the current hour.
pub fn create_example(dir: &Path, drivers: u64, hours: u64) -> anyhow::Result<Created> {
    create(&InitArgs {
        dir: dir.to_path_buf(),
        name: Some("kiln_demo".into()),
        anchor: None,
        drivers,
        hours,
    })
}
