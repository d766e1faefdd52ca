//! Diagnostics for log shippers: `--log-format json`.

use crate::common::{healstore, temp_db};

#[test]
fn json_logs_are_one_object_a_line() {
    let (_dir, path) = temp_db();
    let out = healstore(&path)
        .args(["--log-format", "json", "init"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "debug logging says something on init");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
    }
    // The default stays the one-line text form.
    let out = healstore(&path)
        .args(["init"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.lines().all(|l| l.starts_with("healstore: ")),
        "{stderr}"
    );
}
