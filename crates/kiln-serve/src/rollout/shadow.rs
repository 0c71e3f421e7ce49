//! Shadow traffic: a routed request's rows mirrored to the deployment's shadow versions. Each
//! copy runs in its own task, spawned before the caller's own scoring and never awaited, so it
//! cannot change the caller's answer or wait on it; at most [`MAX_IN_FLIGHT`] copies run at once
//! over all models, and a copy beyond that is dropped and counted
//! (`kiln_shadow_dropped_total`), so a slow shadow version cannot pile work up behind the
//! served traffic. A copy is recorded like any request under protocol `shadow`
//! (`kiln_inference_requests_total`, its duration) and, when predictions are logged, logged
//! under the caller's request id with protocol `shadow`, so labels posted for the request
//! score the shadow version too.

use std::sync::Arc;
use std::time::Instant;

use kiln_core::spec::ModelVersion;

use crate::metrics::{ModelLabels, Outcome, Protocol};
use crate::state::ServeState;

/// Shadow copies in flight at most, over all models.
pub const MAX_IN_FLIGHT: usize = 64;

/// Mirrors `rows` to each shadow version. `request_id` and `entities` are the caller's, for the
/// prediction log.
pub fn mirror(
    state: &ServeState,
    shadow: &[ModelVersion],
    rows: &[f64],
    request_id: Option<&str>,
    entities: Option<&[String]>,
) {
    for spec in shadow {
        let Ok(permit) = Arc::clone(state.shadow_slots()).try_acquire_owned() else {
            state.metrics().shadow_dropped(&spec.name);
            continue;
        };
        let (state, spec, rows) = (state.clone(), spec.clone(), rows.to_vec());
        let log = request_id
            .filter(|_| state.monitor().wants_predictions())
            .map(|id| {
                (
                    id.to_string(),
                    rows.clone(),
                    entities.map(<[String]>::to_vec),
                )
            });
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let labels = ModelLabels::new(&spec.name, spec.version);
            let hub = state.models();
            let scored = match hub.get(&spec).await {
                Ok(model) => {
                    let snapshot = state.snapshot();
                    hub.score(&snapshot.models, &model, rows)
                        .await
                        .map(|s| (model, s))
                }
                Err(e) => Err(e),
            };
            let outcome = match &scored {
                Ok(_) => Outcome::Ok,
                Err(e) => Outcome::of_error(e),
            };
            state
                .metrics()
                .inference(Protocol::Shadow, &labels, outcome, started.elapsed());
            if let (Ok((model, scored)), Some((id, features, entities))) = (scored, log) {
                state.monitor().predicted(
                    &model,
                    Protocol::Shadow,
                    id,
                    features,
                    scored.values,
                    entities,
                    started,
                );
            }
        });
    }
}
