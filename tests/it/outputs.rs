//! Files written besides the database (`archive --to`, `dashboard --html`, `demo --html`): never
//! the database or one of its files however spelled, never an existing file (pages: unless
//! `--force`; archives: never), never a device, FIFO or symbolic link, and no temporary file
//! left behind.

use std::path::{Path, PathBuf};

use crate::common::{
    assert_same_files, block_on, db_files, expect_error, expect_success, raw_connection, run,
    temp_db,
};

const NOW: &str = "2026-11-01T12:00:00Z";

fn demo(path: &Path) {
    expect_success(&run(
        path,
        &["--now", NOW, "demo", "--ticks", "30", "--seed", "4"],
    ));
}

fn events(path: &Path) -> i64 {
    block_on(async {
        use sqlx::Connection;
        let mut c = raw_connection(path).await;
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&mut c)
            .await
            .unwrap();
        // Closed before returning, so that its -wal and -shm files are gone when it returns.
        c.close().await.unwrap();
        n
    })
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .file_type()
        .is_fifo()
}

fn archive_to(path: &Path, before: &str, to: &Path) -> std::process::Output {
    run(
        path,
        &[
            "--format",
            "json",
            "archive",
            "--before",
            before,
            "--to",
            arg(to),
        ],
    )
}

#[test]
fn archive_never_writes_over_the_database_or_its_files_however_spelled() {
    let (dir, path) = temp_db();
    demo(&path);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let link = dir.path().join("hard.gz");
    std::fs::hard_link(&path, &link).unwrap();
    let sym = dir.path().join("sym.gz");
    std::os::unix::fs::symlink(&path, &sym).unwrap();
    let n = events(&path);
    let before = db_files(&path);
    let listing = names(dir.path());
    let targets: Vec<PathBuf> = vec![
        path.clone(),
        dir.path().join("sub/../test.db"),
        PathBuf::from(format!("{}-wal", path.display())),
        PathBuf::from(format!("{}-shm", path.display())),
        PathBuf::from(format!("{}-journal", path.display())),
        PathBuf::from("test.db"), // relative to the database's directory, where it runs
        PathBuf::from("./test.db-wal"),
        link.clone(),
        sym.clone(),
    ];
    for before_time in ["2030-01-01T00:00:00Z", "2026-11-01T12:01:00Z"] {
        for target in &targets {
            expect_error(&archive_to(&path, before_time, target), "database");
            assert_same_files(
                &before,
                &db_files(&path),
                &format!("--to {}", target.display()),
            );
            assert_eq!(names(dir.path()), listing, "--to {}", target.display());
        }
    }
    assert_eq!(events(&path), n);
    let v = expect_success(&run(&path, &["verify"]));
    assert!(v.contains("verified"), "{v}");
}

#[test]
fn a_second_archive_to_the_same_file_is_refused_and_the_first_survives() {
    let (dir, path) = temp_db();
    demo(&path);
    let file = dir.path().join("nightly.gz");
    expect_success(&archive_to(&path, "2026-11-01T12:00:40Z", &file));
    let first = std::fs::read(&file).unwrap();
    let before = db_files(&path);
    let n = events(&path);
    let e = expect_error(&archive_to(&path, "2026-11-01T12:01:40Z", &file), "exists");
    assert!(
        e.contains("new file name"),
        "the error says what to do: {e}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        first,
        "the first archive is intact"
    );
    assert_same_files(&before, &db_files(&path), "a refused second archive");
    assert_eq!(events(&path), n);
    // `--force` is not an option for archives.
    let out = run(
        &path,
        &[
            "archive",
            "--before",
            "2026-11-01T12:01:40Z",
            "--to",
            arg(&file),
            "--force",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&file).unwrap(), first);
    assert_same_files(&before, &db_files(&path), "archive --force");
    // The first archive still verifies against the log; a new name works.
    let a = expect_success(&run(&path, &["verify", "--archive", arg(&file)]));
    assert!(a.starts_with("verified"), "{a}");
    expect_success(&archive_to(
        &path,
        "2026-11-01T12:01:40Z",
        &dir.path().join("nightly-2.gz"),
    ));
}

#[test]
fn archives_never_replace_fifos_devices_or_symbolic_links() {
    let (dir, path) = temp_db();
    demo(&path);
    let fifo = dir.path().join("pipe.gz");
    mkfifo(&fifo);
    let target = dir.path().join("elsewhere.gz");
    std::fs::write(&target, b"keep me").unwrap();
    let sym = dir.path().join("link.gz");
    std::os::unix::fs::symlink(&target, &sym).unwrap();
    let dangling = dir.path().join("dangling.gz");
    std::os::unix::fs::symlink(dir.path().join("nowhere.gz"), &dangling).unwrap();
    let before = db_files(&path);
    let listing = names(dir.path());
    for t in [&fifo, &sym, &dangling, Path::new("/dev/null")] {
        expect_error(
            &archive_to(&path, "2030-01-01T00:00:00Z", t),
            "refusing to write",
        );
        assert_same_files(&before, &db_files(&path), &format!("--to {}", t.display()));
        assert_eq!(names(dir.path()), listing);
    }
    assert!(is_fifo(&fifo));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert!(!dir.path().join("nowhere.gz").exists());
}

#[test]
fn pages_never_write_over_the_database_an_existing_file_or_a_non_regular_one() {
    let (dir, path) = temp_db();
    demo(&path);
    let dashboard = |html: &Path, force: bool| {
        let mut a = vec![
            "--now",
            NOW,
            "dashboard",
            "--window",
            "1h",
            "--html",
            arg(html),
        ];
        if force {
            a.push("--force");
        }
        run(&path, &a)
    };
    let fifo = dir.path().join("page.fifo");
    mkfifo(&fifo);
    let kept = dir.path().join("kept.html");
    std::fs::write(&kept, b"keep me").unwrap();
    let sym = dir.path().join("sym.html");
    std::os::unix::fs::symlink(&kept, &sym).unwrap();
    let link = dir.path().join("hard.html");
    std::fs::hard_link(&path, &link).unwrap();
    let before = db_files(&path);
    let listing = names(dir.path());
    for force in [false, true] {
        for t in [
            path.clone(),
            PathBuf::from(format!("{}-wal", path.display())),
            PathBuf::from(format!("{}-shm", path.display())),
            link.clone(),
            fifo.clone(),
            sym.clone(),
            PathBuf::from("/dev/null"),
        ] {
            expect_error(&dashboard(&t, force), "refusing to write");
            assert_same_files(
                &before,
                &db_files(&path),
                &format!("--html {}", t.display()),
            );
            assert_eq!(names(dir.path()), listing, "--html {}", t.display());
        }
    }
    assert!(is_fifo(&fifo));
    // An existing file is replaced only with --force.
    let e = expect_error(&dashboard(&kept, false), "exists");
    assert!(e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&kept).unwrap(), b"keep me");
    expect_success(&dashboard(&kept, true));
    let page = std::fs::read_to_string(&kept).unwrap();
    assert!(page.contains("<html"), "the page replaced the file");
    // A new file needs no --force; nothing temporary is left beside it.
    let fresh = dir.path().join("fresh.html");
    expect_success(&dashboard(&fresh, false));
    assert!(std::fs::read_to_string(&fresh).unwrap().contains("<html"));
    let mut expected = listing.clone();
    expected.push("fresh.html".into());
    expected.sort();
    assert_eq!(names(dir.path()), expected);

    // demo --html checks its page before simulating anything.
    let before = db_files(&path);
    for (t, force) in [(&path, true), (&fresh, false), (&fifo, true)] {
        let mut a = vec!["--now", NOW, "demo", "--ticks", "5", "--html", arg(t)];
        if force {
            a.push("--force");
        }
        expect_error(&run(&path, &a), "refusing to write");
        assert_same_files(
            &before,
            &db_files(&path),
            &format!("demo --html {}", t.display()),
        );
    }
    assert_eq!(names(dir.path()), expected);
}
