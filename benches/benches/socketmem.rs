//! Where an idle socket's memory goes (issue 15): the server's own parts for one
//! authenticated, idle WebSocket session, built as the gateway builds them, counted by a
//! counting allocator step by step.
//!
//! `cargo bench -p palaver-bench --bench socketmem` (`SOCKETMEM_SESSIONS=N`, default 5 000).
//!
//! For each of N sessions, in the gateway's order:
//! 1. `tcp`: the accepted TCP stream, registered with tokio (the client side is a plain
//!    `std` socket, which allocates nothing here);
//! 2. `websocket`: tungstenite's stream with the gateway's buffer sizes;
//! 3. `outbox+registry`: the session's bounded queue, its `authenticated` frame, and its
//!    entry in the session registry;
//! 4. `session actor`: the session's ractor actor (mailbox, task, state, rate buckets);
//! 5. `presence`: the user marked online (one user per socket, the worst case);
//! 6. `tasks`: the socket split into halves, the writer task waiting on the queue and the
//!    reader task waiting on the socket.
//!
//! Printed per session: live heap bytes and live allocations each step added, and at the
//! end the process's resident memory per session (heap + allocator overhead + whatever
//! the steps mapped). Not measured here: hyper's HTTP connection and upgrade (Palaver's
//! socket is a `hyper::upgrade::Upgraded`, not a bare `TcpStream`); compare the idle
//! scenario's RSS per socket with the total printed here for that share.

#[allow(dead_code, reason = "the fixture serves the hot-path bench too")]
mod fixture;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use futures_util::StreamExt;
use palaver_actors::outbox::Outbox;
use palaver_actors::protocol::ServerFrame;
use palaver_actors::session::{SessionActor, SessionArgs};
use ractor::Actor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Counts live heap bytes and live allocations.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same pointer and layout the caller got from `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The gateway's socket settings (`src/ws/mod.rs`, `socket_config`).
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(2 << 20))
        .max_frame_size(Some(2 << 20))
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Live heap (bytes, allocations) now.
fn live() -> (isize, isize) {
    (LIVE_BYTES.load(Ordering::Relaxed), LIVE_ALLOCS.load(Ordering::Relaxed))
}

struct Steps {
    sessions: usize,
    last: (isize, isize),
    rows: Vec<(&'static str, f64, f64)>,
}

impl Steps {
    /// Counts what `step` added once the tasks it spawned ran (their first poll allocates too).
    async fn mark(&mut self, step: &'static str) {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = live();
        let n = self.sessions as f64;
        self.rows.push((step, (now.0 - self.last.0) as f64 / n, (now.1 - self.last.1) as f64 / n));
        self.last = now;
    }
}

fn main() {
    let sessions: usize =
        std::env::var("SOCKETMEM_SESSIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start tokio");
    runtime.block_on(measure(sessions));
}

async fn measure(n: usize) {
    let database = fixture::open_database().await;
    let hub = fixture::start_hub(&database.db).await;
    let users = fixture::seed_users(&database.db, n).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let listener = socket.listen(4096).expect("listen");
    let address = listener.local_addr().expect("address");
    // Clients first, in chunks the listen backlog takes, accepted as they come.
    let mut clients = Vec::with_capacity(n);
    let mut accepted = Vec::with_capacity(n);
    let resident_before = resident_bytes();
    let mut steps = Steps { sessions: n, last: live(), rows: Vec::new() };
    for chunk in 0..n.div_ceil(1000) {
        let count = (n - chunk * 1000).min(1000);
        for _ in 0..count {
            clients.push(std::net::TcpStream::connect(address).expect("connect"));
        }
        for _ in 0..count {
            accepted.push(listener.accept().await.expect("accept").0);
        }
    }
    // The client sockets' vector is not the server's.
    let client_vec = (clients.capacity() * size_of::<std::net::TcpStream>()) as isize;
    steps.last.0 += client_vec;
    steps.last.1 += 1;
    steps.mark("tcp").await;

    let mut sockets = Vec::with_capacity(n);
    for stream in accepted {
        sockets.push(WebSocketStream::from_raw_socket(stream, Role::Server, Some(socket_config())).await);
    }
    steps.mark("websocket").await;

    let config = &hub.config;
    let mut outboxes = Vec::with_capacity(n);
    for user in &users {
        let session_id = uuid::Uuid::now_v7();
        let (outbox, receiver) = Outbox::for_session(
            session_id,
            *user,
            None,
            config.outbound_queue,
            config.outbound_queue_bytes,
            hub.shared.metrics.clone(),
        );
        outbox.push(ServerFrame::Authenticated { user_id: *user, server_version: "bench".into() }.encode());
        hub.sessions().register(outbox.clone(), config.max_sessions_per_user);
        outboxes.push((outbox, receiver));
    }
    steps.mark("outbox+registry").await;

    let mut actors = Vec::with_capacity(n);
    for (outbox, _) in &outboxes {
        let args = SessionArgs { hub: hub.clone(), outbox: outbox.clone() };
        actors.push(Actor::spawn(None, SessionActor, args).await.expect("spawn a session actor"));
    }
    steps.mark("session actor").await;

    for user in &users {
        hub.presence.online(*user);
    }
    steps.mark("presence").await;

    let mut tasks = Vec::with_capacity(2 * n);
    for (socket, (_, mut receiver)) in sockets.into_iter().zip(outboxes) {
        let (mut sink, mut stream) = socket.split();
        tasks.push(tokio::spawn(async move {
            // The queued `authenticated` frame goes out; then the writer waits, as idle.
            while let Some(frame) = receiver.recv().await {
                let _ = futures_util::SinkExt::send(
                    &mut sink,
                    tokio_tungstenite::tungstenite::Message::Text(frame),
                )
                .await;
            }
        }));
        tasks.push(tokio::spawn(async move {
            let _ = stream.next().await;
        }));
    }
    steps.mark("tasks").await;

    let resident = resident_bytes().saturating_sub(resident_before) as f64 / n as f64;
    // For comparison: ractor's own share, an actor with no state and no arguments.
    let mut bare = Vec::with_capacity(n);
    for _ in 0..n {
        bare.push(Actor::spawn(None, Bare, ()).await.expect("spawn a bare actor"));
    }
    steps.mark("(bare ractor actor)").await;
    println!("socketmem: {n} idle sessions, one user each; per session:");
    println!("{:<18} {:>12} {:>14}", "step", "heap bytes", "allocations");
    let (mut bytes, mut allocs) = (0.0, 0.0);
    for (step, b, a) in steps.rows.iter().filter(|(step, ..)| !step.starts_with('(')) {
        println!("{step:<18} {b:>12.0} {a:>14.1}");
        bytes += b;
        allocs += a;
    }
    println!("{:<18} {bytes:>12.0} {allocs:>14.1}", "total heap");
    println!("{:<18} {resident:>12.0}", "resident (RSS)");
    for (step, b, a) in steps.rows.iter().filter(|(step, ..)| step.starts_with('(')) {
        println!("{step:<18} {b:>12.0} {a:>14.1}");
    }
    drop((clients, actors, bare, tasks, Arc::clone(&hub)));
}

/// An actor that holds and does nothing.
struct Bare;

impl Actor for Bare {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ractor::ActorRef<()>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}
