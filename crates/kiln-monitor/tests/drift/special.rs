//! The special functions against SciPy's values (`tests/fixtures/drift/special.json`).

use kiln_monitor::drift::kolmogorov::kstwo_sf;
use kiln_monitor::drift::ks_exact::exact_p;
use kiln_monitor::drift::special::{chi2_sf, ndtr};
use serde_json::Value;

use crate::fixtures::{close, load};

fn rows(v: &Value, key: &str) -> Vec<Vec<Value>> {
    v[key]
        .as_array()
        .expect(key)
        .iter()
        .map(|r| r.as_array().expect("row").clone())
        .collect()
}

fn check(name: &str, rows: impl Iterator<Item = (String, f64, f64)>) {
    let mut errors = Vec::new();
    let mut worst = (0.0f64, String::new());
    let mut n = 0;
    for (input, got, want) in rows {
        n += 1;
        let (ok, rel) = close("ks", got, want);
        if !ok {
            errors.push(format!(
                "{name}({input}) = {got:e}, SciPy {want:e} (rel {rel:e})"
            ));
        }
        if rel > worst.0 {
            worst = (rel, input);
        }
    }
    println!(
        "{name}: {n} values, max relative difference {:.2e} at ({})",
        worst.0, worst.1
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn kstwo_sf_matches_scipy() {
    let v = load("special.json");
    check(
        "kstwo.sf",
        rows(&v, "kstwo_sf").into_iter().map(|r| {
            let (n, x) = (r[0].as_u64().expect("n"), r[1].as_f64().expect("x"));
            (
                format!("n={n}, x={x}"),
                kstwo_sf(n, x),
                r[2].as_f64().expect("sf"),
            )
        }),
    );
}

#[test]
fn chi2_sf_matches_scipy() {
    let v = load("special.json");
    check(
        "chdtrc",
        rows(&v, "chi2_sf").into_iter().map(|r| {
            let (df, x) = (r[0].as_f64().expect("df"), r[1].as_f64().expect("x"));
            (
                format!("df={df}, x={x}"),
                chi2_sf(df, x),
                r[2].as_f64().expect("sf"),
            )
        }),
    );
}

#[test]
fn exact_two_sample_ks_matches_scipy() {
    let v = load("special.json");
    let mut same_fallback = true;
    let cases: Vec<_> = rows(&v, "ks_exact")
        .into_iter()
        .filter_map(|r| {
            let (n1, n2, h) = (
                r[0].as_u64().expect("n1"),
                r[1].as_u64().expect("n2"),
                r[2].as_u64().expect("h"),
            );
            let ok = r[3].as_bool().expect("ok");
            let got = exact_p(n1, n2, h);
            if got.is_some() != ok {
                same_fallback = false;
                eprintln!("n1={n1} n2={n2} h={h}: SciPy exact ok={ok}, Kiln {got:?}");
            }
            let want = r[4].as_f64()?;
            Some((
                format!("n1={n1}, n2={n2}, h={h}"),
                got.unwrap_or(f64::NAN),
                want,
            ))
        })
        .filter(|(_, got, _)| !got.is_nan())
        .collect();
    assert!(
        same_fallback,
        "Kiln must fall back to 'asymp' exactly where SciPy does"
    );
    check("exact KS", cases.into_iter());
}

#[test]
fn z_test_p_matches_scipy() {
    let v = load("special.json");
    check(
        "2(1 - ndtr(|z|))",
        rows(&v, "ztest_p").into_iter().map(|r| {
            let z = r[0].as_f64().expect("z");
            (
                format!("z={z}"),
                2.0 * (1.0 - ndtr(z.abs())),
                r[1].as_f64().expect("p"),
            )
        }),
    );
}
