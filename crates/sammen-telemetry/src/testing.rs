//! Log capture for tests: collect every log line a test (or a whole end-to-end suite) writes, as JSON,
//! at every level, and fail on personal data.
//!
//! ```
//! let logs = sammen_telemetry::testing::capture_logs();
//! tracing::info!(message_id = "c9a0b728-0807-11ed-861d-0242ac120002", "accepted");
//! logs.assert_no_personal_data(&["Bruno Test Elmer"]);
//! assert!(logs.text().contains("accepted"));
//! ```
//!
//! [`capture_logs`] captures the current thread only (a scoped default subscriber), so parallel tests do
//! not see each other's lines. Suites that log from other threads (a server on a multi-threaded runtime)
//! use [`capture_logs_global`], which installs a process-wide subscriber once per test binary and collects
//! every thread's lines.
//!
//! [`capture_from_text`] applies the same checks to log text collected from a child process.
//!
//! No tripwire here: the capture must see what the code tried to log.

use crate::labels::looks_like_cpr;
use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;

/// Collected log output.
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: Option<DefaultGuard>,
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn subscriber(buf: &Arc<Mutex<Vec<u8>>>) -> impl tracing::Subscriber + Send + Sync {
    let w = Writer(buf.clone());
    tracing_subscriber::registry()
        .with(EnvFilter::new("trace"))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(move || w.clone()),
        )
}

/// Capture this thread's log lines until the returned value is dropped.
pub fn capture_logs() -> LogCapture {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let guard = tracing::subscriber::set_default(subscriber(&buf));
    LogCapture {
        buf,
        _guard: Some(guard),
    }
}

/// Capture every thread's log lines for the rest of the process. The first call installs the global
/// subscriber; later calls return the same capture. `None` when another global subscriber was installed
/// first (then nothing can be captured globally).
pub fn capture_logs_global() -> Option<&'static LogCapture> {
    static GLOBAL: OnceLock<Option<LogCapture>> = OnceLock::new();
    GLOBAL
        .get_or_init(|| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            tracing::subscriber::set_global_default(subscriber(&buf))
                .ok()
                .map(|()| LogCapture { buf, _guard: None })
        })
        .as_ref()
}

/// A capture of log text collected elsewhere (a child process's stderr: `sammen serve` run as a process
/// logs through its own subscriber), checked the same way as an in-process capture.
pub fn capture_from_text(text: impl Into<String>) -> LogCapture {
    LogCapture {
        buf: Arc::new(Mutex::new(text.into().into_bytes())),
        _guard: None,
    }
}

/// Where personal data was found: line number (1-based) and what kind. The value itself is not repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Line of the capture.
    pub line: usize,
    /// `cpr-shaped`, or `needle #i` for the i-th (0-based) string passed in.
    pub what: String,
}

impl LogCapture {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    /// Captured lines (one JSON object each).
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }

    /// Forget what was captured so far.
    pub fn clear(&self) {
        self.buf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Lines holding a CPR-shaped number or one of `needles` (test CPR numbers, test patients' names,
    /// clinical phrases of the test messages). Needles are matched case-insensitively; empty needles are
    /// ignored.
    pub fn personal_data(&self, needles: &[&str]) -> Vec<Finding> {
        let lowered: Vec<String> = needles
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.to_lowercase())
            .collect();
        let mut out = Vec::new();
        for (i, line) in self.text().lines().enumerate() {
            if looks_like_cpr(line) {
                out.push(Finding {
                    line: i + 1,
                    what: "cpr-shaped".into(),
                });
            }
            let l = line.to_lowercase();
            for (n, needle) in lowered.iter().enumerate() {
                if l.contains(needle.as_str()) {
                    out.push(Finding {
                        line: i + 1,
                        what: format!("needle #{n}"),
                    });
                }
            }
        }
        out
    }

    /// Panic (naming line numbers, not values) when [`LogCapture::personal_data`] finds anything.
    #[track_caller]
    pub fn assert_no_personal_data(&self, needles: &[&str]) {
        let found = self.personal_data(needles);
        assert!(
            found.is_empty(),
            "personal data in the captured logs ({} lines captured): {found:?}",
            self.text().lines().count()
        );
    }
}
