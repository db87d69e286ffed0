//! The tar stream against GNU tar, and the parts an early upload adds: files sent before the
//! tree, links to them, and a file let go of while sent.

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn stream(plan: &Plan) -> Vec<u8> {
    let mut out = Vec::new();
    write(plan, |b| {
        out.extend_from_slice(&b);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn the_planned_length_is_the_streamed_length_and_tar_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let deep = format!("{}/{}/{}", "d".repeat(70), "e".repeat(90), "f".repeat(120));
    std::fs::create_dir_all(src.join(&deep)).unwrap();
    std::fs::write(src.join(&deep).join("leaf.txt"), b"deep").unwrap();
    std::fs::write(src.join("big.bin"), vec![7u8; 3 * CHUNK + 5]).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("mode"), b"x").unwrap();
    std::fs::set_permissions(src.join("mode"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("l".repeat(150), src.join("long-link")).unwrap();
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
    std::fs::create_dir(src.join("a dir with spaces ü")).unwrap();

    let plan = plan(&src, "ignored").unwrap();
    let bytes = stream(&plan);
    assert_eq!(bytes.len() as u64, plan.total);
    assert_eq!(plan.data, 3 * CHUNK as u64 + 5 + 5);
    assert_eq!(plan.files.len(), 4);

    let tar = dir.path().join("s.tar");
    std::fs::write(&tar, &bytes).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&src)
        .arg(&out)
        .status()
        .unwrap();
    assert!(diff.success());
    let mode = std::fs::metadata(out.join("mode"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(
        std::fs::read_link(out.join("long-link")).unwrap(),
        Path::new(&"l".repeat(150))
    );
}

#[test]
fn a_single_file_is_sent_under_the_upload_name() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("staged");
    std::fs::write(&f, b"one file").unwrap();
    let plan = plan(&f, "report.csv").unwrap();
    assert_eq!(plan.files, vec![("report.csv".to_string(), 8)]);
    assert_eq!(stream(&plan).len() as u64, plan.total);
}

#[test]
fn a_file_that_changed_after_planning_fails_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"12345").unwrap();
    let plan = plan(dir.path(), "x").unwrap();
    std::fs::write(dir.path().join("f"), b"123456").unwrap();
    let err = write(&plan, |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("changed"), "{err}");
}

#[test]
fn files_sent_before_the_tree_become_hard_links_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/kept"), b"sent early").unwrap();
    std::fs::write(src.join("changed"), b"first").unwrap();
    let held = Held::default();
    let mut bytes = Vec::new();
    let mut tar = Tar::new(|b: Bytes| {
        bytes.extend_from_slice(&b);
        Ok(())
    });
    let kept = tar
        .file_as("early/1".into(), &src.join("d/kept"), &held)
        .unwrap()
        .unwrap();
    let first = tar
        .file_as("early/2".into(), &src.join("changed"), &held)
        .unwrap()
        .unwrap();
    // Gone before it was read: nothing goes.
    assert_eq!(
        tar.file_as("early/3".into(), &src.join("gone"), &held)
            .unwrap(),
        None
    );
    std::fs::write(src.join("changed"), b"second!").unwrap();
    let mut plan = plan(&src, "x").unwrap();
    let whole = plan.total;
    let (linked, linked_bytes) = plan.link_sent(|m| {
        [(kept, "early/1"), (first, "early/2")]
            .iter()
            .find(|(sent, _)| sent == m)
            .map(|(_, link)| link.to_string())
    });
    assert_eq!((linked, linked_bytes), (1, 10));
    assert!(plan.total < whole);
    assert_eq!(plan.data, 10 + 7, "the tree's data stays what it holds");
    tar.plan(&plan).unwrap();
    tar.end().unwrap();
    assert_eq!(bytes.len() as u64 % BLOCK, 0);

    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut untar = Command::new("tar")
        .arg("-xf")
        .arg("-")
        .arg("-C")
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(untar.stdin.as_mut().unwrap(), &bytes).unwrap();
    assert!(untar.wait().unwrap().success());
    std::fs::remove_dir_all(out.join("early")).unwrap();
    let diff = Command::new("diff").arg("-r").arg(&src).arg(&out).status();
    assert!(diff.unwrap().success());
}

#[test]
fn a_file_removed_while_sent_early_is_let_go_of_and_its_entry_filled_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let size = 8 * CHUNK as u64;
    std::fs::write(&path, vec![7u8; size as usize]).unwrap();
    let held = std::sync::Arc::new(Held::default());
    // The reader stops at its first and second piece until told to go on.
    let (piece, pieces) = std::sync::mpsc::channel::<()>();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let reader = {
        let (held, path) = (held.clone(), path.clone());
        std::thread::spawn(move || {
            let (mut bytes, mut n) = (0u64, 0);
            let mut tar = Tar::new(|b: Bytes| {
                n += 1;
                if n <= 2 {
                    piece.send(()).unwrap();
                    wait.recv().unwrap();
                }
                bytes += b.len() as u64;
                Ok(())
            });
            held.set(Some(1));
            let sent = tar.file_as("early/1".into(), &path, &held).unwrap();
            held.set(None);
            tar.end().unwrap();
            (sent, bytes)
        })
    };
    // The file is open and being read: it is removed now.
    pieces.recv().unwrap();
    let remover = {
        let held = held.clone();
        std::thread::spawn(move || held.release(1))
    };
    while !held.must_let_go() {
        std::thread::yield_now();
    }
    go.send(()).unwrap();
    // At the next piece, mid-entry, the reader has closed the file.
    pieces.recv().unwrap();
    remover.join().unwrap();
    assert_eq!(held.key(), None);
    go.send(()).unwrap();
    let (sent, bytes) = reader.join().unwrap();
    assert_eq!(sent, None, "what arrives is not the file");
    let stat = std::fs::metadata(&path).unwrap();
    assert_eq!(
        bytes,
        file_entry_len("early/1", &stat) + 2 * BLOCK,
        "the entry is whole"
    );
}

#[test]
fn pax_record_lengths_count_themselves() {
    let mut out = Vec::new();
    record(&mut out, "path", &"p".repeat(93));
    let s = String::from_utf8(out).unwrap();
    let (len, _) = s.split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), s.len());
}
