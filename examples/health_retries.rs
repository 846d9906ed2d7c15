//! Health checks, retries and resource replacement.
//!
//! `cargo run --release --example health_retries`
//!
//! Each worker owns an `ImageProcessor`. Some images crash the processor: the task returns
//! `ProcessError::Crashed`, which `check_health` reports as unhealthy. The worker then destroys
//! its processor, makes a new one on the same thread, and the task is retried (on the priority
//! queue) until it succeeds or `max_retries` runs out. A bad image is a plain error: the
//! processor is fine, so there is no retry. An at-most-once task (`queue_task_once*`) is never
//! retried, even when the processor crashed.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use tasker::{TaskContext, TaskError, TaskManager};

static NEXT_ID: AtomicU32 = AtomicU32::new(1);
static CREATED: AtomicU32 = AtomicU32::new(0);
static DESTROYED: AtomicU32 = AtomicU32::new(0);

/// The resource: an image processor that can crash.
struct ImageProcessor {
    id: u32,
    processed: u32,
}

impl ImageProcessor {
    fn start() -> Result<ImageProcessor, ProcessError> {
        CREATED.fetch_add(1, Ordering::Relaxed);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        println!("      + processor #{id} started");
        Ok(ImageProcessor { id, processed: 0 })
    }

    fn shut_down(self) -> Result<(), ProcessError> {
        DESTROYED.fetch_add(1, Ordering::Relaxed);
        println!(
            "      - processor #{} destroyed ({} image(s) processed)",
            self.id, self.processed
        );
        Ok(())
    }

    /// Processes `image`; it crashes the processor on its first `image.crashes` attempts.
    fn process(&mut self, image: &Image, ctx: &TaskContext) -> Result<String, ProcessError> {
        let attempt = ctx.attempt();
        println!(
            "    [processor #{}] attempt {attempt}: {}",
            self.id, image.name
        );
        if image.corrupt {
            return Err(ProcessError::BadImage(image.name.to_owned()));
        }
        if attempt <= image.crashes {
            return Err(ProcessError::Crashed { processor: self.id });
        }
        self.processed += 1;
        Ok(format!(
            "{}.thumb.png (by processor #{})",
            image.name, self.id
        ))
    }
}

#[derive(Clone, Copy)]
struct Image {
    name: &'static str,
    /// How many attempts crash the processor before one succeeds.
    crashes: u32,
    /// A corrupt file: a plain error, the processor is fine.
    corrupt: bool,
}

const fn image(name: &'static str, crashes: u32) -> Image {
    Image {
        name,
        crashes,
        corrupt: false,
    }
}

#[derive(Debug)]
enum ProcessError {
    /// The processor crashed: it must be replaced.
    Crashed { processor: u32 },
    /// The image cannot be decoded; the processor is fine.
    BadImage(String),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Crashed { processor } => write!(f, "processor #{processor} crashed"),
            ProcessError::BadImage(name) => write!(f, "{name} is not a valid image"),
        }
    }
}

impl std::error::Error for ProcessError {}

fn report(outcome: Result<String, TaskError<ProcessError>>) {
    match outcome {
        Ok(thumb) => println!("  => ok: {thumb}"),
        Err(TaskError::Failed { error, attempts }) => {
            println!("  => failed after {attempts} attempt(s): {error}")
        }
        Err(e) => println!("  => {e}"),
    }
}

/// The task that processes `img`: a closure the manager can run (and re-run) on any worker.
fn process(
    img: Image,
) -> impl FnMut(&mut ImageProcessor, &TaskContext) -> Result<String, ProcessError> + Send + 'static
{
    move |p, ctx| p.process(&img, ctx)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("starting 2 workers (max_retries = 3, so a task runs at most 4 times):");
    let manager = TaskManager::builder()
        .on_create(ImageProcessor::start)
        .on_destroy(ImageProcessor::shut_down)
        .check_health(|e| !matches!(e, ProcessError::Crashed { .. }))
        .worker_count(2)
        .max_retries(3)
        .resource_pool_size(0) // no run_task here: no pooled processors
        .build()?;

    println!("\n1. a healthy image");
    report(manager.queue_task(process(image("cat.png", 0))));

    println!("\n2. an image that crashes the processor twice: replaced twice, retried, then ok");
    report(manager.queue_task(process(image("panorama.tif", 2))));

    println!("\n3. a corrupt image: a plain error, the processor is kept, no retry");
    report(manager.queue_task(process(Image {
        corrupt: true,
        ..image("truncated.jpg", 0)
    })));

    println!("\n4. an image that always crashes: retried until max_retries runs out");
    report(manager.queue_task(process(image("poison.gif", u32::MAX))));

    println!("\n5. the same crash in an at-most-once task: the processor is replaced, no retry");
    report(manager.queue_task_once(process(image("upload-once.png", 1))));

    println!("\n6. a batch through handles: two of them crash once and are retried");
    let batch = [
        image("a.png", 0),
        image("b.png", 1),
        image("c.png", 0),
        image("d.png", 1),
    ];
    let handles: Vec<_> = batch
        .iter()
        .map(|&img| (img.name, manager.queue_task_async(process(img))))
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|(n, h)| (n, h.wait())).collect();
    println!("  results:");
    for (name, outcome) in outcomes {
        print!("  {name:<6}");
        report(outcome);
    }

    let m = manager.metrics();
    println!(
        "\nmetrics: {} ok, {} failed, {} retried, {} processors replaced",
        m.total_tasks_completed,
        m.total_tasks_failed,
        m.total_tasks_retried,
        m.total_resources_replaced
    );

    println!("\nstopping:");
    let stopped = manager.stop();
    println!("stop() = {stopped:?}");
    println!(
        "processors created {}, destroyed {}",
        CREATED.load(Ordering::Relaxed),
        DESTROYED.load(Ordering::Relaxed)
    );
    stopped?;
    Ok(())
}
