//! Disk full: on a small tmpfs, accept fails with a typed disk-full error, nothing accepted earlier is
//! lost, and accept works again once space is freed. Needs root (mount); it fails, not skips, without it,
//! because mounting was verified to work on this project's machines.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sammen_outbox::*;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap().keep();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs failed ({st}); this test needs root"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // Fill the last partial block too.
    while f.write_all(&[1u8; 512]).is_ok() {}
    let _ = f.sync_all();
}

fn body(i: usize) -> Vec<u8> {
    format!("{i:08}").repeat(512).into_bytes()
}

fn disk_full<B: Backend>() {
    let mnt = Tmpfs::mount("16m");
    let db = mnt.0.join("db");
    let filler = mnt.0.join("filler");
    let ob = B::open(&db, OutboxConfig::default());
    let mut kept = Vec::new();
    for i in 0..100 {
        let AcceptOutcome::Accepted { id } = ob
            .accept(req(
                "5790001348120",
                "5790002515200",
                &format!("m{i}"),
                &format!("b{i}"),
                &body(i),
            ))
            .unwrap()
        else {
            panic!()
        };
        kept.push((id, i));
    }
    fill(&filler);
    // The engine may have preallocated some space: keep accepting until it runs out.
    let mut err = None;
    for i in 100..20_000 {
        match ob.accept(req(
            "5790001348120",
            "5790002515200",
            &format!("m{i}"),
            &format!("b{i}"),
            &body(i),
        )) {
            Ok(AcceptOutcome::Accepted { id }) => kept.push((id, i)),
            Ok(o) => panic!("{o:?}"),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("accept never failed on a full disk");
    assert!(err.is_disk_full(), "{} gave {err:?}", B::NAME);
    eprintln!("{}: {} accepted, then {err}", B::NAME, kept.len());
    // Still (nearly) full: each try either fits in what a failed write released or is a typed error.
    for i in 0..5 {
        let id = format!("late{i}");
        match ob.accept(req("5790001348120", "5790002515200", &id, &id, &body(i))) {
            Ok(AcceptOutcome::Accepted { id }) => kept.push((id, i)),
            Ok(o) => panic!("{o:?}"),
            Err(e) => assert!(e.is_disk_full(), "{e:?}"),
        }
    }

    std::fs::remove_file(&filler).unwrap();
    let AcceptOutcome::Accepted { id: after } = ob
        .accept(req(
            "5790001348120",
            "5790002515200",
            "after",
            "after",
            b"after",
        ))
        .unwrap()
    else {
        panic!()
    };
    for (id, i) in &kept {
        assert_eq!(ob.payload(*id).unwrap().unwrap(), body(*i));
    }
    drop(ob);
    let ob = B::open(&db, OutboxConfig::default());
    for (id, i) in &kept {
        assert_eq!(
            ob.payload(*id).unwrap().unwrap(),
            body(*i),
            "{id} lost after reopen"
        );
        assert_eq!(ob.status(*id).unwrap().unwrap().state, State::Accepted);
    }
    assert_eq!(ob.payload(after).unwrap().unwrap(), b"after");
    // A failed accept promised nothing, but its batch may still have reached the disk (the caller
    // retries and gets `Duplicate`): so at least, not exactly, the accepted ones.
    assert!(
        ob.depth() > kept.len() as u64,
        "{} < {}",
        ob.depth(),
        kept.len() + 1
    );
}

per_backend!(disk_full);
