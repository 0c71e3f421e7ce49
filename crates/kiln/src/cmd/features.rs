//! `kiln features get`: online features from the command line, read from the project's online
//! store through the same core as the HTTP API.

use kiln_core::time::{format_timestamp, now_micros};
use kiln_features::online::{Catalog, FeatureSelection, OnlineRequest, get_online_features};

use super::Ctx;
use crate::output::table;

#[derive(clap::Subcommand)]
pub enum FeaturesCmd {
    /// Look up features for entity keys.
    Get(GetArgs),
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// Take the features of this feature service.
    #[arg(
        long,
        conflicts_with = "features",
        required_unless_present = "features"
    )]
    pub service: Option<String>,
    /// Features as view:feature, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Join key values: KEY=V1[,V2...]; repeat for composite keys.
    #[arg(long = "entity", required = true)]
    pub entities: Vec<String>,
    #[arg(long)]
    pub full_feature_names: bool,
}

pub async fn run(ctx: &Ctx, cmd: FeaturesCmd) -> anyhow::Result<()> {
    let FeaturesCmd::Get(a) = cmd;
    let project = ctx.project()?;
    let state = project.registry().await?.state().await?;
    let catalog = Catalog::from_state(&state);
    let store = project.online_store().await?;
    let mut entities = Vec::new();
    for e in &a.entities {
        let (k, vals) = e
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--entity {e:?}: write KEY=VALUE[,VALUE...]"))?;
        let values = vals
            .split(',')
            // As text: the join key's declared type decides how it is read ("1.50" stays a
            // string for a string key, "1001" becomes an integer for an int64 key).
            .map(|v| serde_json::Value::String(v.to_string()))
            .collect();
        entities.push((k.to_string(), values));
    }
    let req = OnlineRequest {
        features: match a.service {
            Some(s) => FeatureSelection::Service(s),
            None => FeatureSelection::Refs(a.features),
        },
        entities,
        full_feature_names: a.full_feature_names,
    };
    let resp = get_online_features(&catalog, store.as_ref(), &req, now_micros()).await?;
    if ctx.json() {
        let v: serde_json::Value = serde_json::from_slice(&kiln_serve::encode_response(&resp)?)?;
        return crate::output::json(&v);
    }
    let header: Vec<&str> = resp.columns.iter().map(|c| c.name.as_str()).collect();
    let n_keys = req.entities.len();
    let rows = (0..resp.columns.first().map_or(0, |c| c.values.len()))
        .map(|row| {
            resp.columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i < n_keys {
                        c.values[row].to_string()
                    } else {
                        let status = c.statuses[row];
                        match status {
                            kiln_features::online::FeatureStatus::Present => format!(
                                "{}\n@ {}",
                                c.values[row],
                                format_timestamp(c.event_timestamps[row])
                            ),
                            other => other.label().to_string(),
                        }
                    }
                })
                .collect()
        })
        .collect();
    println!("{}", table(&header, rows));
    Ok(())
}
