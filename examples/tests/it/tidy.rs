//! The crate dependency graph is the one DESIGN.md draws: no cycles, nothing upward.

use std::collections::{BTreeMap, BTreeSet};

#[test]
fn crates_depend_only_downwards() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            // Normal dependencies only: a crate may test itself with more features.
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("wit-"))
            .map(str::to_owned)
            .collect();
        graph.insert(name, deps);
    }
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("wit-wal", &[][..]),
        ("wit-batch", &[][..]),
        ("wit-store", &["wit-batch"][..]),
        ("wit-tracker", &["wit-batch", "wit-store"][..]),
        ("wit-index", &["wit-batch", "wit-store"][..]),
        ("wit-query", &["wit-batch", "wit-store", "wit-index"][..]),
        (
            "wit-pipeline",
            &[
                "wit-wal",
                "wit-batch",
                "wit-store",
                "wit-tracker",
                "wit-index",
                "wit-query",
            ][..],
        ),
    ]);
    for (krate, deps) in &graph {
        if let Some(allowed) = allowed.get(krate.as_str()) {
            let extra: Vec<&String> = deps.iter().filter(|d| !allowed.contains(&d.as_str())).collect();
            assert!(extra.is_empty(), "{krate} must not depend on {extra:?}");
        }
    }
    for krate in allowed.keys() {
        assert!(graph.contains_key(*krate), "{krate} is a workspace member");
    }
}
