//! A broker that accepts TCP but never answers the AMQP handshake must not cost a thread and a socket per
//! connect attempt (lapin's io loop outlived our connect timeout before `sammen_bus::amqp_connect`).
//! Its own test binary: it counts the process's `lapin-io-loop` threads, which other tests would disturb.

use std::net::TcpListener;
use std::time::{Duration, Instant};

fn io_loop_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "lapin-io-loop")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_leaves_no_io_loop_thread_behind() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accept and hold every connection open, never writing a byte: a hung broker.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            if held_tx.send(s).is_err() {
                break;
            }
        }
    });
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let attempts = 8;
    for _ in 0..attempts {
        let r = sammen_bus::amqp_connect(
            &url,
            lapin::ConnectionProperties::default(),
            Duration::from_millis(300),
        )
        .await;
        assert!(
            matches!(r, Err(sammen_bus::BusError::Timeout { op: "connect", .. })),
            "a silent broker must time out, got {r:?}"
        );
    }
    let held: Vec<_> = held_rx.try_iter().collect();
    assert_eq!(
        held.len(),
        attempts,
        "every attempt reached the silent broker"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while io_loop_threads() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        io_loop_threads(),
        0,
        "lapin io-loop threads still running after {attempts} timed-out connects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_is_refused_without_connecting() {
    let r = sammen_bus::amqp_connect(
        "amqp://guest:secret@127.0.0.1:notaport/%2f",
        lapin::ConnectionProperties::default(),
        Duration::from_secs(1),
    )
    .await;
    match r {
        Err(e @ sammen_bus::BusError::BadUrl { .. }) => {
            assert!(!e.to_string().contains("secret"), "{e}");
            assert!(!e.is_retryable());
        }
        other => panic!("expected BadUrl, got {other:?}"),
    }
}
