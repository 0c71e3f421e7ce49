//! `kiln plan` and `kiln apply`.

use kiln_core::time::now_micros;
use kiln_features::FeatureError;
use kiln_features::plan::{Action, plan};

use super::Ctx;

pub async fn run(ctx: &Ctx, apply: bool) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let defs = match kiln_features::definitions::load(&project.dir, &project.definitions_dir()) {
        Ok(d) => d,
        Err(FeatureError::Invalid(diags)) => {
            if ctx.json() {
                crate::output::json(&serde_json::json!({ "valid": false, "errors": diags }))?;
            } else {
                for d in &diags {
                    eprintln!("{d}");
                }
            }
            anyhow::bail!(
                "{} error(s) in the definitions; nothing was registered",
                diags.len()
            );
        }
        Err(e) => return Err(e.into()),
    };
    let registry = project.registry().await?;
    let state = registry.state().await?;
    let p = plan(&defs, &state, now_micros());
    let changed = p
        .changes
        .iter()
        .filter(|c| c.action != Action::Unchanged)
        .count();
    if apply && !p.is_empty() {
        registry.append(p.base_seq, &p.events).await?;
    }
    if ctx.json() {
        crate::output::json(&serde_json::json!({
            "valid": true,
            "applied": apply,
            "changes": p.changes,
            "events": p.events.len(),
        }))?;
        return Ok(());
    }
    for c in p.changes.iter().filter(|c| c.action != Action::Unchanged) {
        println!("{c}");
    }
    let unchanged = p.changes.len() - changed;
    match (apply, changed) {
        (_, 0) => println!("No changes ({unchanged} object(s) up to date)."),
        (true, n) => println!(
            "Applied {n} change(s) ({} registry event(s)); {unchanged} unchanged.",
            p.events.len()
        ),
        (false, n) => println!(
            "{n} change(s) to apply; {unchanged} unchanged. Run `kiln apply` to register them."
        ),
    }
    Ok(())
}
