//! What it teaches: tasker in front of a real database. Each worker owns one SQLite
//! connection (`rusqlite`, bundled SQLite); tasks are closures that get `&mut Connection`.
//! Connections are checked with `validate` after sitting idle, replaced after 30 minutes, and
//! replaced when a task reports them broken (`check_health`). A deadline bounds how long a
//! request may wait in the queue.
//!
//! `cargo run --release --example sqlite`

use std::time::Duration;

use rusqlite::{Connection, ErrorCode, params};
use tasker::{TaskError, TaskManager};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A database file with one table.
    let path = std::env::temp_dir().join(format!("tasker-sqlite-{}.db", std::process::id()));
    let setup = Connection::open(&path)?;
    setup.execute_batch(
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )?;
    drop(setup);

    let db = path.clone();
    let manager = TaskManager::builder()
        // Called on each worker's own thread: one connection per worker.
        .on_create(move || {
            let conn = Connection::open(&db)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            Ok(conn)
        })
        .on_destroy(|conn| conn.close().map_err(|(_, e)| e))
        // A read-only or corrupt database means this connection is done for: replace it.
        .check_health(|e| {
            !matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::ReadOnly | ErrorCode::DatabaseCorrupt)
            )
        })
        .validate(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).is_ok())
        .resource_max_lifetime(Duration::from_secs(30 * 60))
        .worker_count(2)
        .build()?;

    // A write that must not run twice: `task_once` (never retried), and wait for it.
    let id = manager
        .task_once(|conn, _| {
            conn.execute("INSERT INTO notes (body) VALUES (?1)", ["hello"])?;
            Ok(conn.last_insert_rowid())
        })
        .wait()?;

    // Reads, fanned out through handles; each must start within 100 ms or is answered
    // `DeadlineExceeded` without running.
    let reads: Vec<_> = (0..8)
        .map(|_| {
            manager
                .task(move |conn, _| {
                    conn.query_row("SELECT body FROM notes WHERE id = ?1", [id], |row| {
                        row.get::<_, String>(0)
                    })
                })
                .timeout(Duration::from_millis(100))
                .spawn()
        })
        .collect();
    for read in reads {
        match read.wait() {
            Ok(body) => assert_eq!(body, "hello"),
            Err(TaskError::DeadlineExceeded) => println!("a read waited too long; skipped"),
            Err(e) => return Err(e.into()),
        }
    }

    // A priority write with a callback, answered on a worker thread.
    let (tx, rx) = std::sync::mpsc::channel();
    manager
        .task(move |conn, _| {
            conn.execute(
                "UPDATE notes SET body = ?1 WHERE id = ?2",
                params!["hi", id],
            )
        })
        .priority()
        .callback(move |updated| tx.send(updated).expect("main is waiting"));
    println!("updated {} row(s)", rx.recv()??);

    // Right here on this thread, with a connection from the run_task pool.
    let count: i64 = manager
        .run_task(|conn, _| conn.query_row("SELECT COUNT(*) FROM notes", [], |row| row.get(0)))?;
    println!(
        "{count} note(s); {} tasks completed",
        manager.metrics().total_tasks_completed
    );

    manager.stop()?;
    std::fs::remove_file(&path)?;
    Ok(())
}
