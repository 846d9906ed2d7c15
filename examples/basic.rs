//! The basics: a calculator per worker, tasks in every delivery mode, a plain error.
//!
//! `cargo run --release --example basic`
//!
//! Each worker owns a `Calculator`. Tasks are queued blocking (the caller waits), with a
//! callback (the answer arrives on a worker thread), and with a handle (wait later, or
//! `.await`). Dividing by zero is a plain error: the calculator is fine, so the task is not
//! retried and the caller gets `TaskError::Failed { attempts: 1, .. }`.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;

use tasker::{TaskError, TaskManager};

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// The resource: a calculator that counts the operations it ran.
struct Calculator {
    id: u32,
    operations: u64,
}

impl Calculator {
    fn new() -> Result<Calculator, CalcError> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let thread = std::thread::current();
        println!(
            "  + calculator #{id} created on thread {}",
            thread.name().unwrap_or("?")
        );
        Ok(Calculator { id, operations: 0 })
    }

    fn shut_down(self) -> Result<(), CalcError> {
        println!(
            "  - calculator #{} destroyed after {} operation(s)",
            self.id, self.operations
        );
        Ok(())
    }

    fn add(&mut self, a: f64, b: f64) -> Result<f64, CalcError> {
        self.operations += 1;
        Ok(a + b)
    }

    fn multiply(&mut self, a: f64, b: f64) -> Result<f64, CalcError> {
        self.operations += 1;
        Ok(a * b)
    }

    fn divide(&mut self, a: f64, b: f64) -> Result<f64, CalcError> {
        self.operations += 1;
        if b == 0.0 {
            return Err(CalcError::DivideByZero);
        }
        Ok(a / b)
    }
}

#[derive(Debug)]
enum CalcError {
    DivideByZero,
}

impl fmt::Display for CalcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalcError::DivideByZero => f.write_str("division by zero"),
        }
    }
}

impl std::error::Error for CalcError {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("building a manager with 2 workers and a run_task pool of 1:");
    let manager = TaskManager::builder()
        .on_create(Calculator::new)
        .on_destroy(Calculator::shut_down)
        .worker_count(2)
        .resource_pool_size(1)
        .build()?;

    // 1. Blocking: the caller waits for the answer.
    println!("\n1. blocking");
    let sum = manager.queue_task(|calc, _| calc.add(2.0, 3.0))?;
    println!("   2 + 3 = {sum}");
    let product = manager.queue_task_with_priority(|calc, _| calc.multiply(6.0, 7.0))?;
    println!("   6 * 7 = {product} (priority)");

    // 2. Callback: the answer arrives on a worker thread; here it is sent back over a channel.
    println!("\n2. callback");
    let (tx, rx) = mpsc::channel();
    for (a, b) in [(10.0, 4.0), (1.0, 3.0), (9.0, 0.0)] {
        let tx = tx.clone();
        manager.queue_task_with_callback(
            move |calc, _| calc.divide(a, b).map(|q| (calc.id, q)),
            move |outcome| {
                let _ = tx.send((a, b, outcome));
            },
        );
    }
    drop(tx);
    let mut answers: Vec<_> = rx.iter().collect();
    answers.sort_by(|x, y| x.0.total_cmp(&y.0)); // callbacks arrive in any order
    for (a, b, outcome) in answers {
        match outcome {
            Ok((id, q)) => println!("   {a} / {b} = {q:.4} (calculator #{id})"),
            Err(e) => println!("   {a} / {b}: {e}"),
        }
    }

    // 3. Handles: queue several, wait later.
    println!("\n3. handles");
    let handles: Vec<_> = (1..=4)
        .map(|i| {
            let x = f64::from(i);
            let handle = manager.queue_task_async(move |calc, _| calc.multiply(x, x));
            (x, handle)
        })
        .collect();
    for (x, handle) in handles {
        println!("   {x}^2 = {}", handle.wait()?);
    }
    // A handle is also a future: `.await` it on any executor.
    let handle = manager.queue_task_with_priority_async(|calc, _| calc.add(0.5, 0.25));
    let sum = pollster::block_on(handle)?;
    println!("   0.5 + 0.25 = {sum} (priority, awaited)");

    // 4. A plain error: the calculator is healthy, so the task is not retried.
    println!("\n4. a plain error");
    match manager.queue_task(|calc, _| calc.divide(1.0, 0.0)) {
        Ok(q) => println!("   1 / 0 = {q}?"),
        Err(TaskError::Failed { error, attempts }) => {
            println!("   1 / 0 failed after {attempts} attempt(s): {error}")
        }
        Err(e) => println!("   1 / 0: unexpected {e}"),
    }

    // 5. At most once: an `FnOnce` task may move captured values out.
    println!("\n5. at most once");
    let numbers = vec![1.5, 2.5, 3.0];
    let total = manager.queue_task_once(move |calc, _| {
        numbers.into_iter().try_fold(0.0, |acc, n| calc.add(acc, n))
    })?;
    println!("   1.5 + 2.5 + 3.0 = {total}");

    // 6. run_task: runs now on this thread, with the pooled calculator, bypassing the queues.
    println!("\n6. run_task");
    let (id, q) = manager.run_task(|calc, _| calc.divide(22.0, 7.0).map(|q| (calc.id, q)))?;
    println!("   22 / 7 = {q:.4} (calculator #{id}, from the pool)");

    let m = manager.metrics();
    println!(
        "\nmetrics: {} ok, {} failed, {} retried",
        m.total_tasks_completed, m.total_tasks_failed, m.total_tasks_retried
    );

    println!("\nstopping:");
    let stopped = manager.stop();
    println!("stop() = {stopped:?}");
    stopped?;
    Ok(())
}
