//! Sliding windows of what a model version saw: the last N rows of its logged features and
//! outputs, kept column by column so a drift report can read them without copying row by row.
//! Fed from prediction events on the bus; live drift compares these windows with a reference.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::bus::EventBus;
use crate::drift::{ColumnData, Dataset};
use crate::events::{Event, PredictionEvent};

/// The last rows of one model version, by column (inputs in model order, then outputs).
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub columns: Vec<String>,
    pub values: Vec<VecDeque<f64>>,
    /// Rows seen since the window started (not only those still in it).
    pub seen: u64,
}

impl Window {
    fn new(event: &PredictionEvent) -> Window {
        // Named as the prediction log names them, so a window, a logged file and a reference
        // line up by name.
        let mut columns: Vec<String> = event
            .inputs
            .iter()
            .map(|i| crate::predlog::writer::feature_column(i))
            .collect();
        for i in 0..event.n_outputs.max(1) {
            columns.push(crate::predlog::writer::output_column(
                i,
                event.n_outputs.max(1),
            ));
        }
        Window {
            values: vec![VecDeque::new(); columns.len()],
            columns,
            seen: 0,
        }
    }

    /// A window of these columns and values (one per column, all the same length).
    pub fn from_columns(columns: Vec<String>, values: Vec<Vec<f64>>) -> Window {
        let seen = values.first().map_or(0, Vec::len) as u64;
        Window {
            columns,
            values: values.into_iter().map(VecDeque::from).collect(),
            seen,
        }
    }

    /// The window as drift's input: a column of doubles per column.
    pub fn to_dataset(&self) -> Dataset {
        let mut d = Dataset::new();
        for (name, values) in self.columns.iter().zip(&self.values) {
            // Names are unique: inputs are, and outputs are named apart from them.
            let _ = d.push(
                name.clone(),
                ColumnData::Float(values.iter().copied().collect()),
            );
        }
        d
    }

    pub fn rows(&self) -> usize {
        self.values.first().map_or(0, VecDeque::len)
    }

    fn push(&mut self, event: &PredictionEvent, capacity: usize) {
        let f = event.inputs.len();
        let k = event.n_outputs.max(1);
        if self.columns.len() != f + k {
            return;
        }
        for r in 0..event.rows() {
            for i in 0..f {
                let v = event.features.get(r * f + i).copied().unwrap_or(f64::NAN);
                self.values[i].push_back(v);
            }
            for o in 0..k {
                let v = event.outputs.get(r * k + o).copied().unwrap_or(f64::NAN);
                self.values[f + o].push_back(v);
            }
            self.seen += 1;
        }
        for column in &mut self.values {
            while column.len() > capacity {
                column.pop_front();
            }
        }
    }
}

/// Windows of every served model version.
#[derive(Debug)]
pub struct Windows {
    capacity: usize,
    windows: Mutex<HashMap<(String, u32), Window>>,
}

/// The name of the windows' subscription on the bus.
pub const SUBSCRIBER: &str = "drift_window";

impl Windows {
    /// Keeps the last `capacity` rows of each model version published on `bus`.
    pub fn start(bus: &EventBus, capacity: usize) -> Arc<Windows> {
        let windows = Arc::new(Windows {
            capacity: capacity.max(1),
            windows: Mutex::new(HashMap::new()),
        });
        let mut sub = bus.subscribe(SUBSCRIBER, 65_536, |e| matches!(e, Event::Prediction(_)));
        let me = Arc::downgrade(&windows);
        tokio::spawn(async move {
            while let Some(event) = sub.rx.recv().await {
                let Some(me) = me.upgrade() else { break };
                if let Event::Prediction(p) = event {
                    me.push(&p);
                }
            }
        });
        windows
    }

    pub fn push(&self, event: &PredictionEvent) {
        let mut all = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        all.entry((event.model.clone(), event.version))
            .or_insert_with(|| Window::new(event))
            .push(event, self.capacity);
    }

    /// A copy of one version's window.
    pub fn get(&self, model: &str, version: u32) -> Option<Window> {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(model.to_string(), version))
            .cloned()
    }

    /// The versions that have a window.
    pub fn versions(&self) -> Vec<(String, u32)> {
        let mut out: Vec<_> = self
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(rows: usize, start: f64) -> PredictionEvent {
        PredictionEvent {
            request_id: "r".into(),
            model: "m".into(),
            version: 1,
            protocol: "rest",
            ts_micros: 0,
            inputs: Arc::from(vec!["a".to_string(), "b".to_string()]),
            objective: Arc::from("binary"),
            features: (0..rows * 2).map(|i| start + i as f64).collect(),
            outputs: (0..rows).map(|i| start + i as f64 / 10.0).collect(),
            n_outputs: 1,
            entities: None,
            latency_us: 1,
        }
    }

    #[test]
    fn windows_keep_the_last_rows_by_column() {
        let windows = Windows {
            capacity: 3,
            windows: Mutex::new(HashMap::new()),
        };
        windows.push(&event(2, 0.0));
        windows.push(&event(2, 100.0));
        let w = windows.get("m", 1).expect("window");
        assert_eq!(w.columns, ["a", "b", "prediction"]);
        assert_eq!(w.rows(), 3);
        assert_eq!(w.seen, 4);
        assert_eq!(Vec::from(w.values[0].clone()), [2.0, 100.0, 102.0]);
        assert_eq!(Vec::from(w.values[1].clone()), [3.0, 101.0, 103.0]);
        assert_eq!(Vec::from(w.values[2].clone()), [0.1, 100.0, 100.1]);
        assert!(windows.get("m", 2).is_none());
    }
}
