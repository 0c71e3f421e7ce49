//! `GET /v1/alerts`: every alert rule's state per subject (inactive, pending, firing) with its
//! last value, and the engine's counts (evaluations, notifications sent, failed, dropped).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::ServeState;

pub(crate) async fn list(State(state): State<ServeState>) -> Json<Value> {
    Json(match state.alerts() {
        Some(engine) => json!({
            "configured": true,
            "alerts": engine.alerts(),
            "stats": engine.stats(),
        }),
        None => json!({ "configured": false, "alerts": [] }),
    })
}
